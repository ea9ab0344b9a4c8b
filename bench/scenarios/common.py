"""Pieces the scenarios share: connect a fleet and summarise its initial sync."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import report
from bench.baseline import Captured
from bench.capture import save
from bench.procs import Subprocess
from bench.simulator.fleet import ALL_TYPES, ChangeResult, Fleet, FleetSpec
from bench.stack import Context

#: How long the initial sync may take before a scenario gives up (per 1,000 proxies).
SYNC_TIMEOUT_PER_1000 = 60.0


def fleet_spec(
    ctx: Context,
    target: str,
    proxies: int,
    mode: str = "sotw",
    *,
    ramp: float = 1.0,
    follow: frozenset[str] = ALL_TYPES,
    prefix: str = "sim",
) -> FleetSpec:
    return FleetSpec(
        target=target,
        proxies=proxies,
        mode=mode,
        workers=ctx.workers,
        streams_per_channel=ctx.streams_per_channel,
        ramp=ramp,
        follow=follow,
        node_prefix=prefix,
    )


def sync_timeout(proxies: int) -> float:
    return max(30.0, SYNC_TIMEOUT_PER_1000 * proxies / 1000)


def connect(fleet: Fleet, proxies: int) -> dict[str, Any]:
    """Wait for the fleet's initial sync; summarise it (times from the fleet's t0)."""
    status = fleet.wait_synced(sync_timeout(proxies))
    results = fleet.results()
    t0 = fleet.t0
    synced = [p["synced"] - t0 for p in results if p["synced"]]
    first = [p["first_response"] - t0 for p in results if p["first_response"]]
    per_type: dict[str, Any] = {}
    for short in ("cds", "eds", "lds", "rds"):
        acks = [p["types"][short][0] - t0 for p in results if p["types"][short][0]]
        received = sum(p["types"][short][3] for p in results)
        per_type[short] = {
            "all_acked_s": max(acks) if len(acks) == proxies else None,
            "acked": len(acks),
            "bytes_received": received,
            "responses": sum(p["types"][short][2] for p in results),
            "resources": sum(p["types"][short][4] for p in results),
        }
    errors = sorted({p["error"] for p in results if p["error"]})
    return {
        "proxies": proxies,
        "synced": status["synced"],
        "failed": status["failed"],
        "errors": errors[:5],
        "all_synced_s": max(synced) if len(synced) == proxies else None,
        "sync_time_s": report.stats(synced),
        "first_response_s": report.stats(first),
        "per_type": per_type,
        "bytes_per_proxy": sum(t["bytes_received"] for t in per_type.values()) / max(1, proxies),
        "sync_quantiles": report.quantiles(synced),
    }


def change_summary(results: Sequence[ChangeResult]) -> dict[str, Any]:
    """Over several changes: time until every proxy ACKed each, per-proxy latencies, fan-out."""
    all_acked = [r.all_acked for r in results if r.all_acked is not None]
    fan_out = [r.fan_out for r in results if r.fan_out is not None]
    first = [r.first_received for r in results if r.first_received is not None]
    per_proxy = [x for r in results for x in r.acked]
    return {
        "changes": len(results),
        "incomplete": sum(1 for r in results if r.missing),
        "missing_acks": sum(r.missing for r in results),
        "all_acked_s": report.stats(all_acked),
        "first_received_s": report.stats(first),
        "fan_out_s": report.stats(fan_out),
        "per_proxy_s": report.stats(per_proxy),
        "all_acked_quantiles": report.quantiles(all_acked),
        "per_proxy_quantiles": report.quantiles(per_proxy),
    }


class Baseline:
    """The wire baseline server (``bench.baseline``) serving bytes captured from our server."""

    def __init__(self, ctx: Context, captured: Captured, name: str) -> None:
        import sys

        snapshot = save(captured, ctx.work / f"{name}-captured.pickle")
        self.process = Subprocess(
            [sys.executable, "-m", "bench.baseline", "--snapshot", str(snapshot)],
            ctx.work / f"{name}-baseline.log",
            cwd=Path(__file__).resolve().parent.parent.parent,
        )
        self.target = ""
        self._channel: Any = None

    def __enter__(self) -> Baseline:
        line = self.process.start(lambda text: text.startswith("listening "), 60)
        self.target = line.split()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._channel is not None:
            self._channel.close()
        self.process.stop()

    def push(self, variant: int) -> float:
        """Trigger one EDS push to every stream; returns the monotonic time just before."""
        import grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.target)
            self._push = self._channel.unary_unary("/bench.Baseline/Push")
            grpc.channel_ready_future(self._channel).result(timeout=30)
        at = time.monotonic()
        self._push(str(variant).encode(), timeout=30)
        return at
