"""Coalesce bursts of changes: wait for a quiet period, but never longer than a maximum."""

from __future__ import annotations

import asyncio
import time


class Debouncer:
    """``poke()`` marks a change; ``wait()`` returns once changes have settled.

    It returns ``quiet`` seconds after the last poke, or ``max_delay`` after the first poke
    of the burst under constant churn, whichever comes first. Nothing polls: it sleeps
    exactly until the next deadline and re-checks.
    """

    def __init__(self, quiet: float, max_delay: float) -> None:
        self.quiet = quiet
        self.max_delay = max(max_delay, quiet)
        self._event = asyncio.Event()
        self._first: float | None = None
        self._last = 0.0

    def poke(self) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = now
        self._last = now
        self._event.set()

    async def wait(self) -> float:
        """Wait for a settled burst; returns the monotonic time its first change arrived."""
        await self._event.wait()
        assert self._first is not None
        while True:
            now = time.monotonic()
            deadline = min(self._last + self.quiet, self._first + self.max_delay)
            if now >= deadline:
                break
            await asyncio.sleep(deadline - now)
        first = self._first
        self._first = None
        self._event.clear()
        return first
