"""route_change: one route changed with ``PUT /v1/routes/{name}``; time until every proxy has
ACKed the new RouteConfiguration."""

from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.scenarios.common import change_summary, connect, fleet_spec
from bench.simulator.fleet import Change, ChangeResult, Fleet
from bench.stack import Context, Stack
from bench.workload import LISTENER

TARGET = 1.0
TIMEOUT = 20.0


def run(ctx: Context) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    changes = 4 if ctx.quick else 10
    for n in ctx.proxies:
        with Stack(ctx, "static", f"route-{n}") as stack:
            admin = stack.admin
            if not admin.has_config_api():
                reason = "the REST admin API has no /v1/routes yet (GET /v1/routes is not 200)"
                ctx.say(f"route_change: skipped: {reason}")
                return {"skipped": reason, "targets": []}
            ctx.say(f"route_change: {n} proxies, {changes} PUT /v1/routes/r000")
            results: list[ChangeResult] = []
            put_times: list[float] = []
            with Fleet(fleet_spec(ctx, stack.ads, n, "sotw", prefix="route")) as fleet:
                sync = connect(fleet, n)
                time.sleep(1.0)
                fleet.record(True)
                start = time.monotonic()
                for k in range(changes):
                    document = ctx.workload.route_document(0, timeout=f"{16 + k}s")
                    at = time.monotonic()
                    admin.put(document)
                    put_times.append(time.monotonic() - at)
                    results.append(fleet.wait_change(Change("rds", LISTENER, at), TIMEOUT))
                    time.sleep(0.3)
                end = time.monotonic()
                fleet.record(False)
            summary = change_summary(results)
            summary.update(
                {
                    "proxies": n,
                    "put_latency_s": report.stats(put_times),
                    "initial_sync": {k: sync[k] for k in ("all_synced_s", "synced", "failed")},
                    "server": stack.window(start, end),
                }
            )
            runs.append(summary)
            s = summary["all_acked_s"]
            targets.append(
                report.target(
                    f"route change → all {n} ACKed",
                    f"≤ {TARGET:.0f} s (no stated target; the endpoint one)",
                    f"p50 {report.fmt(s.get('p50'), 's')}, max {report.fmt(s.get('max'), 's')}",
                    s.get("max") is not None and s["max"] <= TARGET and not summary["incomplete"],
                )
            )
    report.plot_cdf(
        {f"{r['proxies']} proxies": r["per_proxy_quantiles"] for r in runs},
        ctx.results / "route_change.png",
        "route change: per-proxy latency from PUT /v1/routes to the RDS ACK",
    )
    return {"runs": runs, "targets": targets}
