"""``python -m bench.loop_lag OUT serve …``: the server, with an event-loop lag probe inside.

The server has no lag metric of its own, and lag can only be seen from inside the loop: a
task sleeps ``INTERVAL`` and records by how much it overslept (the time some callback held
the loop). Samples go to ``OUT`` as ``<monotonic> <overshoot seconds>`` lines, flushed every
``FLUSH`` seconds; ``CLOCK_MONOTONIC`` is the machine's, so the bench compares them with its
own timestamps. The probe is installed through the event-loop policy, so the server's code
is run unchanged (``xds_server.cli.main``). With ``XDS_BENCH_CPROFILE=PATH`` in its
environment, the server runs under cProfile and its stats are written to ``PATH`` at exit.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import IO

INTERVAL = 0.010
FLUSH = 0.5


async def probe(out: IO[str]) -> None:
    """Sleep ``INTERVAL`` again and again; write each overshoot."""
    lines: list[str] = []
    flushed = time.monotonic()
    while True:
        before = time.monotonic()
        await asyncio.sleep(INTERVAL)
        now = time.monotonic()
        lines.append(f"{now:.6f} {max(0.0, now - before - INTERVAL):.6f}\n")
        if now - flushed >= FLUSH:
            out.writelines(lines)
            out.flush()
            lines.clear()
            flushed = now


class ProbedPolicy(asyncio.DefaultEventLoopPolicy):
    """Every new loop (``asyncio.run`` makes one) starts the probe first thing."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self._out = out
        self._tasks: set[asyncio.Task[None]] = set()

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()

        def start() -> None:
            task = loop.create_task(probe(self._out), name="loop-lag probe")
            self._tasks.add(task)

        loop.call_soon(start)
        return loop


def read(path: Path, start: float, end: float) -> list[float]:
    """The overshoots (seconds) sampled between two monotonic times."""
    found: list[float] = []
    try:
        text = path.read_text()
    except OSError:
        return found
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue  # a line being written
        at, lag = float(parts[0]), float(parts[1])
        if start <= at <= end:
            found.append(lag)
    return found


def main(argv: list[str]) -> int:
    out = Path(argv[0]).open("a", buffering=1 << 16)  # noqa: SIM115 - open while serving
    asyncio.set_event_loop_policy(ProbedPolicy(out))
    from xds_server.cli.main import main as serve

    profile = os.environ.get("XDS_BENCH_CPROFILE")
    if not profile:
        return serve(argv[1:])
    import cProfile

    profiler = cProfile.Profile()
    try:
        return int(profiler.runcall(serve, argv[1:]))
    finally:
        profiler.dump_stats(profile)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
