"""connect_storm: N proxies connect within a second; time until every one has ACKed
CDS, EDS (every cluster's endpoints), LDS and RDS. SotW and delta against xds-server, and
SotW against the wire baseline serving the same bytes."""

from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.capture import capture
from bench.scenarios.common import Baseline, connect, fleet_spec
from bench.simulator.fleet import Fleet
from bench.stack import Context, Stack
from bench.workload import service_name

TARGET_1000 = 15.0
#: Delta's storm within this factor of SotW's, same run (issue 18).
DELTA_VS_SOTW = 1.2


def _storm(
    ctx: Context, stack: Stack, target: str, n: int, mode: str, label: str
) -> dict[str, Any]:
    ctx.say(f"connect_storm: {n} {mode} proxies → {label}")
    with Fleet(fleet_spec(ctx, target, n, mode, prefix=f"storm-{mode}")) as fleet:
        start = fleet.t0
        meter = stack.meter(fleet.pids()) if label == "xds-server" else None
        summary = connect(fleet, n)
        end = time.monotonic()
        if meter is not None:
            summary["cpu"] = meter.stop()
    if stack.server is not None and label == "xds-server":
        summary["server"] = stack.window(start, end)
    summary["mode"] = mode
    summary["against"] = label
    return summary


def run(ctx: Context) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    for n in ctx.proxies:
        with Stack(ctx, "static", f"storm-{n}") as stack:
            rss_idle = stack.rss_now(1.0)
            # Both protocols even with --quick: delta's cost relative to SotW is a figure.
            modes = ["sotw", "delta"]
            per_mode = {}
            for mode in modes:
                per_mode[mode] = _storm(ctx, stack, stack.ads, n, mode, "xds-server")
                # Let the server drop the finished streams before the next storm.
                time.sleep(2.0)
            captured = capture(stack.ads, service_name(0))
        with Baseline(ctx, captured, f"storm-{n}") as baseline:
            base = _storm(ctx, stack, baseline.target, n, "sotw", "wire baseline")
        ours = per_mode["sotw"]["all_synced_s"]
        ratio = ours / base["all_synced_s"] if ours and base["all_synced_s"] else None
        runs.append(
            {
                "proxies": n,
                "server_rss_before_mb": rss_idle,
                "serving_after_start_s": stack.serving_after,
                "xds_server": per_mode,
                "wire_baseline": base,
                "ratio_to_baseline": ratio,
            }
        )
        for mode, summary in per_mode.items():
            value = summary["all_synced_s"]
            goal = f"≤ {TARGET_1000:.0f} s" if n <= 1000 else "all connected and synced"
            met = value is not None and value <= TARGET_1000 if n <= 1000 else value is not None
            targets.append(
                report.target(
                    f"connect storm {n} ({mode}) fully synced",
                    goal,
                    report.fmt(value, "s")
                    if value is not None
                    else f"{summary['synced']}/{n} synced",
                    met,
                )
            )
        sotw_s, delta_s = (per_mode[m]["all_synced_s"] for m in ("sotw", "delta"))
        delta_ratio = delta_s / sotw_s if sotw_s and delta_s else None
        runs[-1]["delta_vs_sotw"] = delta_ratio
        runs[-1]["server_cpu_s"] = {
            m: per_mode[m].get("server", {}).get("cpu_seconds") for m in per_mode
        }
        targets.append(
            report.target(
                f"connect storm {n}, delta vs SotW",
                f"≤ {DELTA_VS_SOTW}x",
                f"{delta_ratio:.2f}x" if delta_ratio else "—",
                delta_ratio is not None and delta_ratio <= DELTA_VS_SOTW,
            )
        )
        targets.append(
            report.target(
                f"connect storm {n} vs wire baseline",
                "informative",
                f"{ratio:.2f}x" if ratio else "—",
                None,
            )
        )
    series = {
        f"{r['proxies']} {mode}": r["xds_server"][mode]["sync_quantiles"]
        for r in runs
        for mode in r["xds_server"]
    }
    series.update(
        {f"{r['proxies']} wire baseline": r["wire_baseline"]["sync_quantiles"] for r in runs}
    )
    report.plot_cdf(
        series,
        ctx.results / "connect_storm.png",
        "connect storm: time from start until each proxy is synced (CDS+EDS+LDS+RDS ACKed)",
        marks={"15 s target": TARGET_1000},
    )
    if len(runs) > 1:
        vs_n: dict[str, list[tuple[int, float]]] = {}
        for r in runs:
            for mode, s in r["xds_server"].items():
                if s["all_synced_s"] is not None:
                    vs_n.setdefault(f"xds-server {mode}", []).append(
                        (r["proxies"], s["all_synced_s"])
                    )
            if r["wire_baseline"]["all_synced_s"] is not None:
                vs_n.setdefault("wire baseline", []).append(
                    (r["proxies"], r["wire_baseline"]["all_synced_s"])
                )
        report.plot_vs_n(
            vs_n,
            ctx.results / "connect_storm_vs_n.png",
            "connect storm: time until all proxies are synced",
            "seconds",
        )
    return {"runs": runs, "targets": targets}
