"""Pacing of watch loops: a token bucket for rounds, a jittered back-off for errors.

Consul's blocking-query guide asks for both: a loop that returns quickly (churn, or an index
that does not block) must degrade into polling at a bounded rate rather than spin, without a
fixed sleep in the happy path (a burst of 2 lets a couple of changes through at once); and
errors must be retried with a growing, jittered delay so that many clients do not reconnect
in lock-step after an outage.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable


class TokenBucket:
    """``acquire()`` returns at once while tokens last; refills ``rate`` tokens a second."""

    def __init__(
        self, rate: float, burst: int = 2, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def delay(self) -> float:
        """Seconds until a token is available (0: now)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self._rate

    def try_acquire(self) -> bool:
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a token, sleeping until one has accumulated (never a fixed sleep).

        Tokens may go slightly negative (clock granularity, concurrent callers): that debt
        lengthens the next wait, so the long-run rate holds.
        """
        delay = self.delay()
        if delay > 0:
            await asyncio.sleep(delay)
            self._refill()
        self._tokens -= 1


class Backoff:
    """Exponential back-off with "equal jitter": a delay in [d/2, d], d = base·2ⁿ capped.

    Half the delay is guaranteed (no near-zero retries that hammer a struggling server),
    the other half is random (clients spread out).
    """

    def __init__(
        self, base: float, maximum: float, *, rng: Callable[[], float] = random.random
    ) -> None:
        self._base = base
        self._max = maximum
        self._rng = rng
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt

    def next_delay(self) -> float:
        ceiling = min(self._max, self._base * 2 ** min(self._attempt, 32))
        self._attempt += 1
        return float(ceiling / 2 + self._rng() * ceiling / 2)

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self._attempt = 0
