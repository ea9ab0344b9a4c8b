"""MemoryReleaser: freed memory goes back to the OS once a burst has settled, once per burst."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from xds_server.runtime import MemoryReleaser, malloc_trim, resident_bytes


class FakeTrim:
    def __init__(self) -> None:
        self.calls: list[float] = []
        self.threads: set[int] = set()

    def __call__(self) -> None:
        self.calls.append(time.monotonic())
        self.threads.add(threading.get_ident())


async def next_trim(releaser: MemoryReleaser, done: list[int]) -> None:
    """Wait until ``on_trim`` has been called once more than ``len(done)`` times so far."""
    expected = len(done) + 1
    event = asyncio.Event()

    def on_trim(freed: int) -> None:
        done.append(freed)
        if len(done) >= expected:
            event.set()

    releaser.on_trim = on_trim
    await asyncio.wait_for(event.wait(), 5)


async def test_a_burst_of_pokes_trims_once_and_off_the_event_loop() -> None:
    trim = FakeTrim()
    releaser = MemoryReleaser(trim, quiet=0.01, max_delay=1.0, min_interval=0.0)
    runner = asyncio.create_task(releaser.run())
    done: list[int] = []
    try:
        waiting = asyncio.create_task(next_trim(releaser, done))
        await asyncio.sleep(0)  # let the waiter install its callback
        for _ in range(50):
            releaser.poke()
        await waiting
        assert len(trim.calls) == 1
        assert threading.get_ident() not in trim.threads

        waiting = asyncio.create_task(next_trim(releaser, done))
        await asyncio.sleep(0)
        releaser.poke()
        await waiting
        assert len(trim.calls) == 2 == releaser.trims
        assert all(freed >= 0 for freed in done)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_trims_are_at_least_min_interval_apart() -> None:
    trim = FakeTrim()
    releaser = MemoryReleaser(trim, quiet=0.0, max_delay=0.0, min_interval=0.2)
    runner = asyncio.create_task(releaser.run())
    done: list[int] = []
    try:
        for _ in range(2):
            waiting = asyncio.create_task(next_trim(releaser, done))
            await asyncio.sleep(0)
            releaser.poke()
            await waiting
        assert trim.calls[1] - trim.calls[0] >= 0.2
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_without_malloc_trim_nothing_runs() -> None:
    releaser = MemoryReleaser(None)  # a C library without malloc_trim
    releaser.poke()
    await asyncio.wait_for(releaser.run(), 1)  # returns at once
    assert not releaser.available and releaser.trims == 0


def test_glibc_trim_is_found_and_runs() -> None:
    trim = malloc_trim()
    assert trim is not None  # this machine runs glibc (Debian)
    trim()
    assert resident_bytes() > 0
