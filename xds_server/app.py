"""Wiring: build every part from settings and run them in one asyncio loop.

Sources publish inventories and the store publishes config states into the snapshot
pipeline; the pipeline translates and fills the cache; the gRPC server and the admin API
read from there. Nothing else knows how the parts are connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from xds_server.admin.app import create_admin_app
from xds_server.admin.context import AdminContext
from xds_server.admin.server import AdminServer
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.status import ProxyRegistry
from xds_server.model.config import Config
from xds_server.model.inventory import Inventory
from xds_server.model.problems import InvalidDocuments
from xds_server.pipeline import SnapshotPipeline
from xds_server.preview import preview_for
from xds_server.server.grpc_server import start_ads_server
from xds_server.settings import Address, Settings, SettingsError
from xds_server.sources.base import InventorySource
from xds_server.sources.consul import ConsulWatcher
from xds_server.sources.consul_settings import ConsulSettings
from xds_server.sources.empty import EmptyRegistry
from xds_server.sources.static import StaticRegistry
from xds_server.store.base import ConfigState, ConfigStore
from xds_server.store.sqlite import SqliteStore
from xds_server.translate import translate

log = logging.getLogger("xds_server")

#: How long SIGTERM lets short calls (Fetch) finish; xDS streams never end by themselves,
#: so they are closed after it and Envoy reconnects (to another replica, if any).
SHUTDOWN_GRACE = 1.0


def build_source(settings: Settings) -> InventorySource:
    if settings.registry_kind == "consul":
        overrides: dict[str, Any] = {}
        if "CONSUL_HTTP_ADDR" in settings.consul:
            overrides["address"] = settings.consul["CONSUL_HTTP_ADDR"]
        if "CONSUL_HTTP_TOKEN" in settings.consul:
            overrides["token"] = settings.consul["CONSUL_HTTP_TOKEN"]
        if "datacenters" in settings.consul:
            overrides["datacenters"] = tuple(
                dc.strip() for dc in settings.consul["datacenters"].split(",") if dc.strip()
            )
        try:
            return ConsulWatcher(ConsulSettings.from_env(os.environ, **overrides))
        except ValueError as error:
            raise SettingsError(f"--registry consul: {error}") from error
    if settings.registry_path:
        return StaticRegistry(settings.registry_path)
    return EmptyRegistry()


def build_store(settings: Settings) -> ConfigStore:
    if settings.store_kind == "sqlite":
        return SqliteStore(settings.store_target or "xds-server.db")
    raise SettingsError(f"--store {settings.store}: not supported by this version")


def config_of(state: ConfigState) -> Config:
    """The operator config of a store state (documents were validated when written)."""
    return Config.from_documents(
        (doc.kind, doc.name, doc.spec, doc.created_revision) for doc in state.documents.values()
    )


@dataclass
class XdsServerApp:
    """The running control plane. ``start`` binds everything; ``stop`` undoes it."""

    settings: Settings
    source: InventorySource | None = None
    store: ConfigStore | None = None
    cache: SnapshotCache = field(default_factory=SnapshotCache)
    registry: ProxyRegistry = field(default_factory=ProxyRegistry)
    ads_address: Address | None = None
    admin_address: Address | None = None
    pipeline: SnapshotPipeline[Config] | None = None
    _grpc: grpc.aio.Server | None = None
    _admin: AdminServer | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        settings = self.settings
        self.source = self.source or build_source(settings)
        self.store = self.store or build_store(settings)
        await self.store.open()
        self.pipeline = SnapshotPipeline(
            self.cache,
            translate,
            Inventory(synced=False),
            config_of(self.store.current()),
            debounce=settings.debounce,
            max_delay=settings.max_delay,
        )
        self._spawn(self.source.run(self._on_inventory), "registry")
        self._spawn(self._follow_store(), "store")
        self._spawn(self.pipeline.run(), "pipeline")
        ads = settings.ads_listen
        self._grpc, ads_port = await start_ads_server(self.cache, self.registry, ads.host, ads.port)
        self.ads_address = Address(ads.host, ads_port)
        admin_app = create_admin_app(
            AdminContext(
                store=self.store,
                inventory=self._inventory,
                preview=preview_for(self._inventory),
                readiness=self._readiness(),
            )
        )
        admin = settings.admin_listen
        self._admin = AdminServer(admin_app, admin.host, admin.port)
        await self._admin.start()
        self.admin_address = Address(admin.host, self._admin.port)
        log.info("started", extra={"ads": str(self.ads_address), "admin": str(self.admin_address)})

    def _readiness(self) -> dict[str, Callable[[], tuple[bool, str]]]:
        def store() -> tuple[bool, str]:
            return self.store is not None, "open"

        def registry() -> tuple[bool, str]:
            status = self.source.status if self.source else None
            if status is None or not status.ready:
                detail = status.last_error if status and status.last_error else "first sync"
                return False, f"waiting for the first inventory: {detail}"
            return True, status.last_error or "synced"

        def ads() -> tuple[bool, str]:
            return self._grpc is not None, f"listening on {self.ads_address}"

        return {"store": store, "registry": registry, "ads": ads}

    def _inventory(self) -> Inventory:
        assert self.pipeline is not None
        return self.pipeline.inventory

    def _on_inventory(self, inventory: Inventory) -> None:
        assert self.pipeline is not None
        self.pipeline.set_inventory(inventory)

    async def _follow_store(self) -> None:
        assert self.store is not None and self.pipeline is not None
        async for state in self.store.watch():
            try:
                self.pipeline.set_config(config_of(state))
            except InvalidDocuments as error:
                log.error("stored config revision %d is invalid: %s", state.revision, error)

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s task failed", name)

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(SHUTDOWN_GRACE)
            self._grpc = None
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.store is not None:
            await self.store.close()


def startup_line(app: XdsServerApp) -> str:
    """The one line tests and scripts read to learn the chosen ports."""
    return f"listening ads={app.ads_address} admin={app.admin_address}"


async def serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        app = XdsServerApp(settings)
        await app.start()
    except (OSError, SettingsError) as error:
        log.error("cannot start: %s", error)
        print(f"xds-server: cannot start: {error}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
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
