"""Coalesce bursts of changes: wait for a quiet period, but never longer than a maximum."""

from __future__ import annotations

import asyncio
import math
import time


def deadline(
    first: float,
    last: float,
    work_ended: float,
    quiet: float,
    max_delay: float,
    eager: bool = False,
) -> float:
    """When ``wait()`` returns for a burst whose first change came at ``first`` and latest
    at ``last``, the caller's previous work having ended at ``work_ended``.

    Settling: ``quiet`` after the last change, at most ``max_delay`` after the first.
    ``eager``: besides, at most ``quiet`` after the first change or after the end of the
    previous work, whichever is later. So a change to an idle pipeline waits one debounce
    window, not for a quiet period that constant churn never gives (``max_delay``), and
    under churn the work runs one window after the other, coalescing what arrives while it
    runs: a change waits about one window plus one piece of work.
    """
    settled = min(last + quiet, first + max_delay)
    if not eager:
        return settled
    return min(settled, max(first, work_ended) + quiet)


class Debouncer:
    """``poke()`` marks a change; ``wait()`` returns once changes have settled (see
    ``deadline``; the work a caller does between two ``wait()`` calls ends when it calls
    ``wait()`` again). Nothing polls: it sleeps exactly until the next deadline and
    re-checks.
    """

    def __init__(self, quiet: float, max_delay: float, eager: bool = False) -> None:
        self.quiet = quiet
        self.max_delay = max(max_delay, quiet)
        self.eager = eager
        self._event = asyncio.Event()
        self._first: float | None = None
        self._last = 0.0
        self._work_ended = -math.inf

    def poke(self) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = now
        self._last = now
        self._event.set()

    async def wait(self) -> float:
        """Wait for a settled burst; returns the monotonic time its first change arrived."""
        self._work_ended = time.monotonic()
        await self._event.wait()
        assert self._first is not None
        while True:
            now = time.monotonic()
            due = deadline(
                self._first, self._last, self._work_ended, self.quiet, self.max_delay, self.eager
            )
            if now >= due:
                break
            await asyncio.sleep(due - now)
        first = self._first
        self._first = None
        self._event.clear()
        return first
