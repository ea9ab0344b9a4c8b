"""Blocking-query machinery: parameter parsing and topic-based wake-ups (no polling).

A blocking request subscribes an asyncio.Event to the topics its result depends on, re-reads
its index whenever one of them is published, and returns once the index passes the requested
one, the wait (plus jitter) elapses, or the store is reset. Publishing happens in the server's
event loop; writers in other threads hand topics over with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping

from .decode import ConsulError, parse_go_duration
from .raft import Topic

__all__ = [
    "DEFAULT_WAIT",
    "MAX_WAIT",
    "WAKE_ALL",
    "Notifier",
    "parse_blocking_params",
    "wait_with_jitter",
]

DEFAULT_WAIT = 300.0  # Consul's default query time: 5m
MAX_WAIT = 600.0  # Consul's max query time: 10m
JITTER_FRACTION = 16  # structs.JitterFraction
WAKE_ALL: Topic = ("*",)


def parse_blocking_params(query: Mapping[str, str]) -> tuple[int, float]:
    """(min_index, wait seconds before jitter) from `?index=&wait=`, as Consul's parseWait."""
    index = 0
    if "index" in query:
        try:
            index = int(query["index"])
            if index < 0:
                raise ValueError
        except ValueError:
            raise ConsulError(400, "Invalid index") from None
    wait = 0.0
    if "wait" in query:
        try:
            wait = parse_go_duration(query["wait"])
        except ValueError:
            raise ConsulError(400, "Invalid wait time") from None
    if wait > MAX_WAIT:
        wait = MAX_WAIT
    elif wait <= 0:
        wait = DEFAULT_WAIT
    return index, wait


def wait_with_jitter(wait: float, jitter: bool) -> float:
    """Consul adds up to wait/16 of random time to spread wake-ups (lib.RandomStagger)."""
    return wait + (random.uniform(0, wait / JITTER_FRACTION) if jitter else 0.0)


class Notifier:
    """Topic -> waiting events. Only ever used from the server's event loop thread."""

    def __init__(self) -> None:
        self._waiters: dict[Topic, set[asyncio.Event]] = {}

    def subscribe(self, topics: Iterable[Topic], event: asyncio.Event) -> None:
        for topic in topics:
            self._waiters.setdefault(topic, set()).add(event)

    def unsubscribe(self, topics: Iterable[Topic], event: asyncio.Event) -> None:
        for topic in topics:
            waiters = self._waiters.get(topic)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[topic]

    def publish(self, topics: Iterable[Topic]) -> None:
        topics = list(topics)
        if WAKE_ALL in topics:
            for waiters in self._waiters.values():
                for event in waiters:
                    event.set()
            return
        for topic in topics:
            for event in self._waiters.get(topic, ()):
                event.set()

    async def wait_until(
        self,
        topics: list[Topic],
        passed: Callable[[], bool],
        timeout: float,
    ) -> bool:
        """Wait until `passed()` (re-checked on each publish of `topics`) or timeout.

        Returns True when `passed()` became true, False on timeout. The event is subscribed
        before the first check, so a publish between check and wait is never lost.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = asyncio.Event()
        self.subscribe(topics, event)
        try:
            while True:
                event.clear()
                if passed():
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    return passed()
        finally:
            self.unsubscribe(topics, event)
