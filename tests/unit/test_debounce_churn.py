"""The debounce under churn: an idle pipeline builds one window after a change, not once
constant churn has gone on for ``max_delay``; builds back to back coalesce what arrives
while they run."""

from __future__ import annotations

import asyncio
import math

from xds_server.runtime.debounce import Debouncer, deadline

QUIET, MAX = 0.1, 1.0


def test_a_lone_change_waits_one_quiet_window() -> None:
    assert deadline(10.0, 10.0, -math.inf, QUIET, MAX) == 10.0 + QUIET
    assert deadline(10.0, 10.0, -math.inf, QUIET, MAX, eager=True) == 10.0 + QUIET


def test_constant_churn_waits_max_delay_unless_eager() -> None:
    # Changes every 20 ms since t=10: the last one at 10.9 never gives 100 ms of quiet.
    assert deadline(10.0, 10.9, 5.0, QUIET, MAX) == 10.0 + MAX
    assert deadline(10.0, 10.9, 5.0, QUIET, MAX, eager=True) == 10.0 + QUIET


def test_changes_during_the_work_wait_one_window_after_it() -> None:
    # The first change at 10.0 came while a build ran until 10.3.
    assert math.isclose(deadline(10.0, 10.35, 10.3, QUIET, MAX, eager=True), 10.3 + QUIET)
    # A burst that ended during the build settles a quiet window after its last change.
    assert math.isclose(deadline(10.0, 10.05, 10.3, QUIET, MAX, eager=True), 10.05 + QUIET)
    # A build that ran for longer than max_delay: no later than max_delay after the change.
    assert deadline(10.0, 12.0, 12.0, QUIET, MAX, eager=True) == 10.0 + MAX


def test_an_eager_debouncer_returns_while_churn_goes_on() -> None:
    """Changes every 10 ms for up to 3 s, ``max_delay`` 30 s: the eager debouncer returns
    while they still arrive; the plain one would wait for the churn to end (or 30 s)."""

    async def scenario() -> tuple[bool, int]:
        debouncer = Debouncer(0.05, 30.0, eager=True)
        stop = asyncio.Event()

        async def churn() -> int:
            pokes = 0
            while not stop.is_set() and pokes < 300:
                debouncer.poke()
                pokes += 1
                await asyncio.sleep(0.01)
            return pokes

        task = asyncio.create_task(churn())
        await debouncer.wait()
        churning = not task.done()
        await debouncer.wait()  # and again, one window after the first "build"
        churning = churning and not task.done()
        stop.set()
        return churning, await task

    churning, pokes = asyncio.run(scenario())
    assert churning, f"the debouncer waited for the churn to end ({pokes} changes)"


def test_a_plain_debouncer_still_waits_for_quiet() -> None:
    """The memory releaser's kind: returns only once changes stop (here: when they do)."""

    async def scenario() -> bool:
        debouncer = Debouncer(0.05, 30.0)
        done = asyncio.Event()

        async def churn() -> None:
            for _ in range(30):
                debouncer.poke()
                await asyncio.sleep(0.01)
            done.set()

        task = asyncio.create_task(churn())
        await debouncer.wait()
        finished = done.is_set()
        await task
        return finished

    assert asyncio.run(scenario())
