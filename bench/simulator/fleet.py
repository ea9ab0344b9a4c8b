"""The parent's side of the simulator: start workers, ask them questions, gather results."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.simulator.worker import MODES, WorkerSpec, worker_main

ALL_TYPES = frozenset({"cds", "eds", "lds", "rds"})


@dataclass(frozen=True, slots=True)
class FleetSpec:
    target: str
    proxies: int
    mode: str = "sotw"
    workers: int = 2
    streams_per_channel: int = 100
    #: Proxies start at uniformly random times within this many seconds.
    ramp: float = 1.0
    follow: frozenset[str] = ALL_TYPES
    group: str = "default"
    node_prefix: str = "sim"
    seed: int = 1
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")


@dataclass
class Change:
    """Something the driver changed at ``at`` (monotonic): resource (type, name) must follow."""

    type_short: str
    name: str
    at: float
    label: str = ""


@dataclass
class ChangeResult:
    change: Change
    #: ACK latency of every proxy that got it (seconds after the change), and receive latency.
    acked: list[float] = field(default_factory=list)
    received: list[float] = field(default_factory=list)
    missing: int = 0

    @property
    def all_acked(self) -> float | None:
        """Seconds until every proxy ACKed, or None if some never did."""
        return max(self.acked) if self.acked and not self.missing else None

    @property
    def first_received(self) -> float | None:
        """Seconds until the first proxy received it: what comes before the fan-out (the
        registry, the debounce, translation and the first send)."""
        return min(self.received) if self.received else None

    @property
    def fan_out(self) -> float | None:
        """First proxy receiving it → last proxy ACKing it (the server's push fan-out)."""
        if not self.acked or self.missing:
            return None
        return max(self.acked) - min(self.received)


class Fleet:
    """``with Fleet(spec) as fleet:`` starts the workers; leaving the block stops them."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self.t0 = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float = 60.0) -> None:
        spec = self.spec
        ctx = multiprocessing.get_context("spawn")
        workers = max(1, min(spec.workers, spec.proxies))
        base, extra = divmod(spec.proxies, workers)
        first = 0
        for w in range(workers):
            count = base + (1 if w < extra else 0)
            worker_spec = WorkerSpec(
                target=spec.target,
                mode=spec.mode,
                first=first,
                count=count,
                streams_per_channel=spec.streams_per_channel,
                follow=spec.follow,
                group=spec.group,
                node_prefix=spec.node_prefix,
                seed=spec.seed,
                poll_interval=spec.poll_interval,
            )
            first += count
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(child, worker_spec), name=f"sim-worker-{w}", daemon=True
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for conn in self._conns:
            if not conn.poll(timeout):
                raise RuntimeError("a simulator worker did not start")
            conn.recv()
        self.t0 = time.monotonic() + 0.2
        self._ask("start", (self.t0, spec.ramp))

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError, EOFError):
                conn.send(("stop", None))
        deadline = time.monotonic() + 10.0
        for conn in self._conns:
            try:
                if conn.poll(max(0.0, deadline - time.monotonic())):
                    conn.recv()
            except (OSError, EOFError):
                pass
        for proc in self._procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        self._procs.clear()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    # -- questions --------------------------------------------------------------------------

    def _ask(self, command: str, argument: Any = None, timeout: float = 600.0) -> list[Any]:
        for conn in self._conns:
            conn.send((command, argument))
        replies = []
        for conn in self._conns:
            if not conn.poll(timeout):
                raise TimeoutError(f"simulator worker did not answer {command!r}")
            name, reply = conn.recv()
            if name != command:
                raise RuntimeError(f"worker answered {name!r} to {command!r}")
            replies.append(reply)
        return replies

    def status(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for reply in self._ask("status"):
            for key, value in reply.items():
                total[key] = total.get(key, 0) + value
        return total

    def wait_synced(self, timeout: float, poll: float = 0.1) -> dict[str, int]:
        """Wait until every proxy is synced (or failed); returns the last status."""
        deadline = time.monotonic() + timeout
        status = self.status()
        while time.monotonic() < deadline:
            if status["synced"] + status["failed"] >= self.spec.proxies:
                break
            time.sleep(poll)
            status = self.status()
        return status

    def record(self, on: bool) -> None:
        self._ask("record", on)

    def latencies(self, changes: Sequence[Change]) -> list[ChangeResult]:
        """For each change: latencies of every proxy, merged over workers."""
        wire = [(c.type_short, c.name, c.at) for c in changes]
        results = [ChangeResult(c) for c in changes]
        for reply in self._ask("latencies", wire):
            for result, (acked, received) in zip(results, reply, strict=True):
                result.acked.extend(acked)
                result.received.extend(received)
        for result in results:
            result.missing = self.spec.proxies - len(result.acked)
        return results

    def wait_change(self, change: Change, timeout: float, poll: float = 0.05) -> ChangeResult:
        """Wait until every proxy has ACKed ``change`` (or ``timeout``); its latencies."""
        deadline = time.monotonic() + timeout
        while True:
            (result,) = self.latencies([change])
            if not result.missing or time.monotonic() >= deadline:
                return result
            time.sleep(poll)

    def totals(self) -> dict[str, list[tuple[int, int, int, int, int]]]:
        merged: dict[str, list[tuple[int, int, int, int, int]]] = {}
        for reply in self._ask("totals"):
            for type_short, rows in reply.items():
                merged.setdefault(type_short, []).extend(rows)
        return merged

    def results(self) -> list[dict[str, Any]]:
        proxies: list[dict[str, Any]] = []
        for reply in self._ask("results"):
            proxies.extend(reply)
        return sorted(proxies, key=lambda p: p["index"])
