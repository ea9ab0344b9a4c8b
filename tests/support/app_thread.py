"""The whole control plane (``XdsServerApp``) in process, on its own event loop thread.

For tests that need the real wiring (admin API, metrics, events) *and* a hand on its parts,
e.g. to inject a snapshot Envoy must reject with ``app.cache.set_snapshots(bad,
check=False)``, which no API allows.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from xds_server.app import XdsServerApp
from xds_server.settings import Address, Settings

T = TypeVar("T")


class ThreadedApp:
    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.app = XdsServerApp(settings)

    def start(self) -> ThreadedApp:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.app.start(), self.loop).result(30)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def ads_port(self) -> int:
        assert self.app.ads_address is not None
        return self.app.ads_address.port

    @property
    def admin(self) -> str:
        assert self.app.admin_address is not None
        return f"http://127.0.0.1:{self.app.admin_address.port}"

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the app's loop (its parts are not thread-safe) and return its result."""

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.app.stop(), self.loop).result(30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()


@contextmanager
def running_app(registry: Path, store: Path) -> Iterator[ThreadedApp]:
    settings = Settings(
        ads_listen=Address("127.0.0.1", 0),
        admin_listen=Address("127.0.0.1", 0),
        registry=f"static:{registry}",
        store=f"sqlite:{store}",
        debounce=0.02,
        max_delay=0.2,
    )
    threaded = ThreadedApp(settings).start()
    try:
        yield threaded
    finally:
        threaded.stop()
