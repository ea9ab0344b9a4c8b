"""consul_reads: what the Consul watcher reads per change, at 100 and 1,000 services.

The Consul double (in this process) is seeded with S services x ``--endpoints`` instances; the
watcher (``ConsulWatcher``, production settings) runs in a child process and prints every
inventory it publishes. Each change is made alone (the watches parked again, the token
buckets full) and costs what the double answered until every watch is parked again: requests
and response bytes by endpoint, the watcher's CPU, and the time from the change to the
publication (the watcher's share of "endpoint change in Consul → all ACKed").

Changes measured: one check flipping (critical, then passing again: each is one change), an
instance with a passing check registered on a new node, and the same instance deregistered.

Before/after side by side: with ``XDS_BENCH_BEFORE=/tmp/before-h3`` (a tree made with
``git archive <commit> | tar -x -C /tmp/before-h3``) the same runs are made with that tree's
``xds_server`` (the double and this driver stay this tree's, so both are measured alike);
the child prints the ``xds_server`` it imported, recorded in the results.

    flock /tmp/bench.lock env XDS_BENCH_BEFORE=/tmp/before-h3 \\
        .venv/bin/python -m bench consul_reads --quick
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from bench import report
from bench.procs import read_cpu_rss
from bench.stack import REPO, Context

SIZES = (100, 1000)
#: Seconds between changes: the watches' token buckets (2/s, burst 2) are full again.
SPACING = 0.6
CHANGE_TIMEOUT = 30.0
SYNC_TIMEOUT = 180.0
#: A check change reads "independently of the number of services" when the bytes at 1,000
#: services are within this factor of those at 100.
INDEPENDENT = 1.2


# -- the child: a watcher printing what it publishes --------------------------------------------


def _child(address: str) -> None:
    """``python -m bench.scenarios.consul_reads child URL``: run the watcher, print JSON lines."""
    import xds_server
    from xds_server.model.inventory import Health, Inventory
    from xds_server.sources.consul import ConsulWatcher
    from xds_server.sources.consul_settings import WatcherSettings

    settings = WatcherSettings.from_env({}, address=address, wait=60.0, resync_interval=0)
    previous: dict[str, Any] = {}

    def publish(inventory: Inventory) -> None:
        changed = {}
        for name, service in inventory.services.items():
            if previous.get(name) is not service:
                unhealthy = sum(e.health is not Health.HEALTHY for e in service.endpoints)
                changed[name] = [len(service.endpoints), unhealthy]
        previous.clear()
        previous.update(inventory.services)
        line = {"at": time.monotonic(), "services": changed, "count": len(inventory.services)}
        print(json.dumps(line), flush=True)

    print(json.dumps({"ready": True, "xds_server": str(Path(xds_server.__file__).parent)}))
    sys.stdout.flush()
    asyncio.run(ConsulWatcher(settings).run(publish))


# -- the driver -----------------------------------------------------------------------------------


class _Watcher:
    """The child process and the lines it printed (read by a thread)."""

    def __init__(self, tree: Path | None, address: str, cwd: Path, log: Path) -> None:
        # PYTHONPATH decides which xds_server the child imports: the "before" tree's package
        # alone (a directory holding only a link to it), then this tree for the driver.
        path = [str(REPO)]
        if tree is not None:
            only = cwd / "before-xds"
            only.mkdir(parents=True, exist_ok=True)
            link = only / "xds_server"
            if not link.exists():
                link.symlink_to(tree / "xds_server")
            path.insert(0, str(only))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.scenarios.consul_reads", "child", address],
            cwd=cwd,  # not the repository: -m puts the working directory first on sys.path
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        self.imported = str(self.next(30.0)["xds_server"])

    def _read(self, out: IO[bytes]) -> None:
        for raw in iter(out.readline, b""):
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(raw))

    def next(self, timeout: float) -> dict[str, Any]:
        return self.lines.get(timeout=timeout)

    def until(self, name: str, state: list[int], timeout: float = CHANGE_TIMEOUT) -> float:
        """The publication time of the first inventory where ``name`` is [endpoints,
        unhealthy] = ``state``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(deadline - time.monotonic(), 0.001))
            if line.get("services", {}).get(name) == state:
                return float(line["at"])

    def cpu(self) -> float:
        return read_cpu_rss(self.proc.pid)[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def _settled(double: Any) -> None:
    """Every watch parked in its blocking query again, nothing else in flight."""
    double.wait_for(lambda: double.blocked_count("/v1/") == 3 and double.inflight == 3, 60.0)


def _group(path: str) -> str:
    for prefix in ("/v1/health/state/", "/v1/health/service/", "/v1/catalog/services"):
        if path.startswith(prefix):
            return prefix.rstrip("/")
    return path


def _reads(double: Any) -> dict[str, Any]:
    by_path: dict[str, dict[str, int]] = {}
    for path in {r.path for r in double.requests()}:
        row = by_path.setdefault(_group(path), {"requests": 0, "bytes": 0})
        row["requests"] += double.request_count(path)
        row["bytes"] += double.bytes_sent(path)
    return {
        "requests": sum(r["requests"] for r in by_path.values()),
        "bytes": sum(r["bytes"] for r in by_path.values()),
        "by_path": dict(sorted(by_path.items())),
    }


@contextlib.contextmanager
def _measure(double: Any, watcher: _Watcher, rows: list[dict[str, Any]]) -> Iterator[float]:
    """Around one change: yields its start time; appends reads, CPU (and the caller adds the
    latency) once every watch is parked again."""
    _settled(double)
    time.sleep(SPACING)
    double.reset_stats()
    cpu = watcher.cpu()
    at = time.monotonic()
    yield at
    _settled(double)
    rows.append({**_reads(double), "watcher_cpu_s": watcher.cpu() - cpu})


def _seeded_node(k: int) -> tuple[str, str]:
    """Name and address of node ``k`` as ``ConsulDouble.seed`` lays them out."""
    return f"svc-node-{k:05d}", f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    paths = sorted({p for r in rows for p in r["by_path"]})
    return {
        "changes": len(rows),
        "requests": sum(r["requests"] for r in rows) / len(rows),
        "bytes": sum(r["bytes"] for r in rows) / len(rows),
        "by_path": {
            p: {
                k: sum(r["by_path"].get(p, {}).get(k, 0) for r in rows) / len(rows)
                for k in ("requests", "bytes")
            }
            for p in paths
        },
        "watcher_cpu_ms": sum(r["watcher_cpu_s"] for r in rows) / len(rows) * 1000,
        "latency_s": report.stats(r["latency_s"] for r in rows),
    }


def _one(ctx: Context, tree: Path | None, services: int, label: str) -> dict[str, Any]:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.consul_double import ConsulDouble

    endpoints = ctx.workload.endpoints
    flips = 3 if ctx.quick else 10
    with ConsulDouble(jitter=False, consul_service=False) as double:
        names = double.seed(services, endpoints)
        double.reset_stats()
        started = time.monotonic()
        log = ctx.work / f"consul-reads-{label}-{services}.log"
        watcher = _Watcher(tree, double.url, ctx.work, log)
        try:
            while watcher.next(SYNC_TIMEOUT).get("count") != services:
                pass
            sync_s = time.monotonic() - started
            _settled(double)
            initial = {**_reads(double), "seconds": sync_s}
            ctx.say(
                f"consul_reads [{label}] {services} x {endpoints}: synced in {sync_s:.1f}s "
                f"({initial['requests']} requests, {initial['bytes'] / 1e6:.1f} MB)"
            )
            checks: list[dict[str, Any]] = []
            for k in range(flips):
                name = names[(k * 37) % services]
                for status, unhealthy in (("critical", 1), ("passing", 0)):
                    with _measure(double, watcher, checks) as at:
                        double.set_check(f"{name}-0", status)
                        published = watcher.until(name, [endpoints, unhealthy])
                    checks[-1]["latency_s"] = published - at
            registered: list[dict[str, Any]] = []
            deregistered: list[dict[str, Any]] = []
            for k in range(flips):
                name = names[(k * 53 + 7) % services]
                instance = f"{name}-extra"
                node, address = _seeded_node(k)  # an existing node: only the instance is new
                with _measure(double, watcher, registered) as at:
                    double.register(
                        name, address, 31000 + k, id=instance, node=node, node_address=address
                    )
                    published = watcher.until(name, [endpoints + 1, 0])
                registered[-1]["latency_s"] = published - at
                with _measure(double, watcher, deregistered) as at:
                    double.deregister(instance)
                    published = watcher.until(name, [endpoints, 0])
                deregistered[-1]["latency_s"] = published - at
        finally:
            watcher.stop()
    return {
        "xds_server": watcher.imported,
        "services": services,
        "endpoints_per_service": endpoints,
        "initial_sync": initial,
        "check_change": _summary(checks),
        "instance_registered": _summary(registered),
        "instance_deregistered": _summary(deregistered),
    }


def _kb(value: float) -> str:
    return f"{value / 1024:,.1f} KiB" if value >= 1024 else f"{value:,.0f} B"


def _row(runs: Mapping[str, Any], what: str) -> str:
    parts = []
    for label, by_size in runs.items():
        figures = ", ".join(
            f"{_kb(by_size[str(s)][what]['bytes'])} / {by_size[str(s)][what]['requests']:.1f} req "
            f"/ p50 {by_size[str(s)][what]['latency_s']['p50'] * 1000:.0f} ms at {s}"
            for s in SIZES
            if str(s) in by_size
        )
        parts.append(f"{label}: {figures}")
    return "; ".join(parts)


def run(ctx: Context) -> dict[str, Any]:
    before = os.environ.get("XDS_BENCH_BEFORE")
    trees: dict[str, Path | None] = {"after": None}
    if before:
        trees = {"before": Path(before).resolve(), "after": None}
    runs: dict[str, dict[str, Any]] = {}
    for label, tree in trees.items():
        for services in SIZES:
            runs.setdefault(label, {})[str(services)] = _one(ctx, tree, services, label)
    after = runs["after"]
    small, large = (after[str(s)]["check_change"]["bytes"] for s in SIZES)
    targets = [
        report.target(
            "Consul data read per single check change (bytes / requests / watcher p50)",
            "independent of the number of services",
            _row(runs, "check_change"),
            large <= small * INDEPENDENT,
        ),
        report.target(
            "Consul data read per instance registered (passing check)",
            "informative",
            _row(runs, "instance_registered"),
            None,
        ),
        report.target(
            "Consul data read per instance deregistered",
            "informative",
            _row(runs, "instance_deregistered"),
            None,
        ),
    ]
    if not before:
        targets.append(
            report.target("before", "set XDS_BENCH_BEFORE to a tree", "not measured", None)
        )
    return {"runs": runs, "targets": targets}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        with contextlib.suppress(KeyboardInterrupt):
            _child(sys.argv[2])
    else:
        raise SystemExit("usage: python -m bench.scenarios.consul_reads child URL")
