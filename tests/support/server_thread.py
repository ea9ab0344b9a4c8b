"""The ADS server on its own event loop thread, so synchronous tests can drive Envoy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.server.grpc_server import start_ads_server
from xds_server.status import ProxyRegistry

T = TypeVar("T")


class ThreadedXds:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.cache = SnapshotCache()
        self.registry = ProxyRegistry()
        self._server: grpc.aio.Server | None = None
        self.port = 0

    def start(self) -> ThreadedXds:
        self._thread.start()

        async def start() -> None:
            self._server, self.port = await start_ads_server(
                self.cache, self.registry, "127.0.0.1", 0
            )

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the server's loop (the cache is not thread-safe) and return its result."""

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                await self._server.stop(None)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
