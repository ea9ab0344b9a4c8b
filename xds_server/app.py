"""Wiring: build every part from settings and run them in one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass, field

import grpc

from xds_server.admin.app import create_admin_app
from xds_server.admin.server import AdminServer
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.status import ProxyRegistry
from xds_server.server.grpc_server import start_ads_server
from xds_server.settings import Address, Settings

log = logging.getLogger("xds_server")

#: How long SIGTERM waits for streams to close before cancelling them.
SHUTDOWN_GRACE = 3.0


@dataclass
class XdsServerApp:
    """The running control plane. ``start`` binds everything; ``stop`` undoes it."""

    settings: Settings
    cache: SnapshotCache = field(default_factory=SnapshotCache)
    registry: ProxyRegistry = field(default_factory=ProxyRegistry)
    ads_address: Address | None = None
    admin_address: Address | None = None
    _grpc: grpc.aio.Server | None = None
    _admin: AdminServer | None = None

    async def start(self) -> None:
        ads = self.settings.ads_listen
        self._grpc, ads_port = await start_ads_server(self.cache, self.registry, ads.host, ads.port)
        self.ads_address = Address(ads.host, ads_port)
        admin_app = create_admin_app(
            readiness={"ads": lambda: (self._grpc is not None, "listening")},
        )
        admin = self.settings.admin_listen
        self._admin = AdminServer(admin_app, admin.host, admin.port)
        await self._admin.start()
        self.admin_address = Address(admin.host, self._admin.port)
        log.info("started", extra={"ads": str(self.ads_address), "admin": str(self.admin_address)})

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(SHUTDOWN_GRACE)
            self._grpc = None
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None


def startup_line(app: XdsServerApp) -> str:
    """The one line tests and scripts read to learn the chosen ports."""
    return f"listening ads={app.ads_address} admin={app.admin_address}"


async def serve(settings: Settings) -> int:
    app = XdsServerApp(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await app.start()
    except OSError as error:
        log.error("cannot start: %s", error)
        await app.stop()
        return 1
    line = startup_line(app)
    # Plain text on both streams, outside the JSON log, so any reader can parse it as is.
    print(line, flush=True)
    print(line, file=sys.stderr, flush=True)
    await stop.wait()
    log.info("shutting down")
    await app.stop()
    log.info("stopped")
    return 0
