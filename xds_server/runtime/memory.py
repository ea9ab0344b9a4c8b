"""Give memory freed by a burst of work back to the operating system.

A thousand streams dropped at once, or a push of every endpoint to every proxy, frees a lot
of memory, but glibc keeps freed memory in its heaps (one per thread that ever allocated)
and the server's resident size stays at its peak. ``malloc_trim(0)`` hands the free pages
of every heap back. It is cheap next to the burst that made it useful, so it runs once such
a burst has settled, never on a timer while idle. Where the C library has no
``malloc_trim`` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from functools import cache

from xds_server.runtime.debounce import Debouncer

log = logging.getLogger("xds_server.memory")

Trim = Callable[[], None]
#: Called after each trim with the bytes of resident memory it gave back.
OnTrim = Callable[[int], None]
_PAGE = 4096


def resident_bytes() -> int:
    """This process's resident memory (Linux), 0 where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


@cache
def malloc_trim() -> Trim | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int

    def trim() -> None:
        function(0)  # ctypes releases the GIL for the call

    return trim


class MemoryReleaser:
    """``poke()`` after work that freed memory; ``run()`` trims once the work has settled
    (``quiet`` seconds without a poke, or ``max_delay`` after the first), at most once per
    ``min_interval``. ``trim`` is ``malloc_trim()`` in the server; None: never trim."""

    def __init__(
        self,
        trim: Trim | None,
        quiet: float = 1.0,
        max_delay: float = 10.0,
        min_interval: float = 1.0,
        on_trim: OnTrim | None = None,
    ) -> None:
        self._trim = trim
        self.on_trim = on_trim
        self._debouncer = Debouncer(quiet, max_delay)
        self._min_interval = min_interval
        self._last: float | None = None
        #: How many times memory was trimmed (for tests).
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def poke(self) -> None:
        if self._trim is not None:
            self._debouncer.poke()

    async def run(self) -> None:
        """Trim after every settled burst, until cancelled."""
        if self._trim is None:
            return
        while True:
            await self._debouncer.wait()
            if self._last is not None:
                wait = self._last + self._min_interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # rate limit: a burst right after a trim
            before = resident_bytes()
            started = time.perf_counter()
            await asyncio.to_thread(self._trim)
            freed = max(0, before - resident_bytes())
            self._last = time.monotonic()
            self.trims += 1
            log.debug(
                "returned %d KiB to the OS in %.1f ms",
                freed // 1024,
                (time.perf_counter() - started) * 1e3,
            )
            if self.on_trim is not None:
                self.on_trim(freed)
