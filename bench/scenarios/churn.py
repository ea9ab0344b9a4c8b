"""churn: 50 endpoint health changes a second in the Consul double for 60 s (10 s with
--quick), each on a different service; convergence latency of every change at every proxy,
and the server's CPU while it lasts."""

from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.scenarios.common import change_summary, connect, fleet_spec
from bench.simulator.fleet import Change, Fleet
from bench.stack import Context, Stack
from bench.workload import service_name

RATE = 50.0
SETTLE_TIMEOUT = 20.0


def run(ctx: Context) -> dict[str, Any]:
    duration = 10.0 if ctx.quick else 60.0
    runs: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    w = ctx.workload
    for n in ctx.proxies:
        with Stack(ctx, "consul", f"churn-{n}") as stack:
            ctx.say(f"churn: {n} proxies, {RATE:.0f} changes/s for {duration:.0f} s")
            with Fleet(fleet_spec(ctx, stack.ads, n, "sotw", prefix="churn")) as fleet:
                sync = connect(fleet, n)
                time.sleep(1.0)
                fleet.record(True)
                changes: list[Change] = []
                meter = stack.meter(fleet.pids())
                start = time.monotonic()
                k = 0
                while True:
                    due = start + k / RATE
                    now = time.monotonic()
                    if due - start >= duration:
                        break
                    if due > now:
                        time.sleep(due - now)
                    # Change k: service k mod S, instance k div S: every endpoint changes at
                    # most once, and a service at most every S / RATE seconds.
                    service, instance = k % w.services, (k // w.services) % w.endpoints
                    at = stack.flap(service, instance, healthy=False)
                    changes.append(Change("eds", service_name(service), at, f"change {k}"))
                    k += 1
                end = time.monotonic()
                cpu_split = meter.stop()
                late = max(0.0, end - (start + duration))
                deadline = time.monotonic() + SETTLE_TIMEOUT
                while time.monotonic() < deadline:
                    (last,) = fleet.latencies(changes[-1:])
                    if not last.missing:
                        break
                    time.sleep(0.2)
                settled = time.monotonic()
                results = fleet.latencies(changes)
                fleet.record(False)
            cpu = stack.window(start, end)
            cpu_settle = stack.window(start, settled)
        summary = change_summary(results)
        step = max(1, len(results) // 300)
        summary["timeline"] = [  # (seconds into the churn, seconds until all ACKed)
            (round(r.change.at - start, 3), round(r.all_acked, 3) if r.all_acked else None)
            for r in results[::step]
        ]
        summary.update(
            {
                "proxies": n,
                "duration_s": duration,
                "rate_per_s": len(changes) / (end - start),
                "driver_late_s": late,
                "initial_sync": {k: sync[k] for k in ("all_synced_s", "synced", "failed")},
                "server_during_churn": cpu,
                "cpu_during_churn": cpu_split,
                "server_until_settled": cpu_settle,
            }
        )
        runs.append(summary)
        s = summary["all_acked_s"]
        targets.append(
            report.target(
                f"churn {len(changes)} changes at {n} proxies: change → all ACKed p99",
                "≤ 1 s (the single-change target)",
                f"p50 {report.fmt(s.get('p50'), 's')}, p99 {report.fmt(s.get('p99'), 's')}, "
                f"max {report.fmt(s.get('max'), 's')}",
                s.get("p99") is not None and s["p99"] <= 1.0 and not summary["incomplete"],
            )
        )
        targets.append(
            report.target(
                f"churn server CPU at {n} proxies",
                "informative (100% = one core)",
                f"{cpu.get('cpu_percent', float('nan')):.0f}% (simulator "
                f"{cpu_split['simulator_cpu_percent']:.0f}%, Consul double + driver "
                f"{cpu_split['bench_and_consul_double_cpu_percent']:.0f}%, machine "
                f"{cpu_split['machine_busy_percent']:.0f}% of {cpu_split['cores']:.0f} cores)",
                None,
            )
        )
    report.plot_cdf(
        {f"per proxy, {r['proxies']} proxies": r["per_proxy_quantiles"] for r in runs}
        | {f"all proxies ACKed, {r['proxies']} proxies": r["all_acked_quantiles"] for r in runs},
        ctx.results / "churn.png",
        f"churn ({RATE:.0f} changes/s): latency from Consul change to EDS ACK",
        marks={"1 s": 1.0},
    )
    return {"runs": runs, "targets": targets}
