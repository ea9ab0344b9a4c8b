"""endpoint_flap: one endpoint's health flaps in the Consul double; time until every proxy
has ACKed the new ClusterLoadAssignment (includes the watcher, the 100 ms debounce, the
translation and the push). The same pushes from the wire baseline give the floor."""

from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.capture import capture
from bench.scenarios.common import Baseline, change_summary, connect, fleet_spec
from bench.simulator.fleet import Change, ChangeResult, Fleet
from bench.stack import Context, Stack
from bench.workload import service_name

TARGET_P99 = 1.0
FLAP_TIMEOUT = 15.0
#: Flaps start at least this far apart, so each is a lone change. The Consul source paces
#: each watch at one round a second (burst 2); faster flapping is what ``churn`` measures.
FLAP_SPACING = 1.5
SERVICE = 0
INSTANCE = 0


def _flaps(ctx: Context) -> int:
    return 6 if ctx.quick else 20


def _flap_ours(ctx: Context, stack: Stack, n: int, mode: str) -> dict[str, Any]:
    ctx.say(f"endpoint_flap: {n} {mode} proxies, {_flaps(ctx)} flaps through Consul")
    results: list[ChangeResult] = []
    with Fleet(fleet_spec(ctx, stack.ads, n, mode, prefix=f"flap-{mode}")) as fleet:
        sync = connect(fleet, n)
        time.sleep(1.0)
        fleet.record(True)
        meter = stack.meter(fleet.pids())
        start = time.monotonic()
        for k in range(_flaps(ctx)):
            at = stack.flap(SERVICE, INSTANCE, healthy=k % 2 == 1)
            change = Change("eds", service_name(SERVICE), at, f"flap {k}")
            results.append(fleet.wait_change(change, FLAP_TIMEOUT))
            time.sleep(max(0.3, at + FLAP_SPACING - time.monotonic()))
        end = time.monotonic()
        summary_cpu = meter.stop()
        fleet.record(False)
    summary = change_summary(results)
    summary["initial_sync"] = {k: sync[k] for k in ("all_synced_s", "synced", "failed")}
    summary["server"] = stack.window(start, end)
    summary["cpu"] = summary_cpu
    return summary


def _flap_baseline(ctx: Context, baseline: Baseline, n: int, mode: str) -> dict[str, Any]:
    ctx.say(f"endpoint_flap: {n} {mode} proxies, {_flaps(ctx)} pushes from the wire baseline")
    results: list[ChangeResult] = []
    with Fleet(fleet_spec(ctx, baseline.target, n, mode, prefix=f"base-{mode}")) as fleet:
        connect(fleet, n)
        time.sleep(1.0)
        fleet.record(True)
        for k in range(_flaps(ctx)):
            at = baseline.push(k % 2)
            change = Change("eds", service_name(SERVICE), at, f"push {k}")
            results.append(fleet.wait_change(change, FLAP_TIMEOUT))
            time.sleep(0.3)
        fleet.record(False)
    return change_summary(results)


def run(ctx: Context) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    modes = ["sotw"] if ctx.quick else ["sotw", "delta"]
    for n in ctx.proxies:
        ours: dict[str, Any] = {}
        with Stack(ctx, "consul", f"flap-{n}") as stack:
            for mode in modes:
                ours[mode] = _flap_ours(ctx, stack, n, mode)
                time.sleep(1.0)
            captured = capture(stack.ads, service_name(SERVICE))
        base: dict[str, Any] = {}
        with Baseline(ctx, captured, f"flap-{n}") as baseline:
            for mode in modes:
                base[mode] = _flap_baseline(ctx, baseline, n, mode)
        ratios: dict[str, Any] = {}
        for mode in modes:
            ours_fan = ours[mode]["fan_out_s"].get("p50")
            base_fan = base[mode]["fan_out_s"].get("p50")
            ours_all = ours[mode]["all_acked_s"].get("p50")
            base_all = base[mode]["all_acked_s"].get("p50")
            ratios[mode] = {
                "fan_out_p50": ours_fan / base_fan if ours_fan and base_fan else None,
                "end_to_end_p50": ours_all / base_all if ours_all and base_all else None,
            }
        runs.append({"proxies": n, "xds_server": ours, "wire_baseline": base, "ratios": ratios})
        for mode in modes:
            s = ours[mode]["all_acked_s"]
            p99 = s.get("p99")
            targets.append(
                report.target(
                    f"endpoint change → all {n} ({mode}) ACKed, p99",
                    f"≤ {TARGET_P99:.0f} s incl. 100 ms debounce",
                    f"p50 {report.fmt(s.get('p50'), 's')}, p99 {report.fmt(p99, 's')}, "
                    f"max {report.fmt(s.get('max'), 's')}"
                    + (
                        f" ({ours[mode]['incomplete']} incomplete)"
                        if ours[mode]["incomplete"]
                        else ""
                    ),
                    p99 is not None and p99 <= TARGET_P99 and not ours[mode]["incomplete"],
                )
            )
            fan = ratios[mode]["fan_out_p50"]
            targets.append(
                report.target(
                    f"push fan-out vs wire baseline ({mode}, {n})",
                    "≤ 2x",
                    f"{fan:.2f}x (ours {report.fmt(ours[mode]['fan_out_s'].get('p50'), 's')}, "
                    f"baseline {report.fmt(base[mode]['fan_out_s'].get('p50'), 's')})"
                    if fan
                    else "—",
                    fan is not None and fan <= 2.0,
                )
            )
    series: dict[str, list[float]] = {}
    for r in runs:
        for mode, s in r["xds_server"].items():
            series[f"xds-server {mode}, {r['proxies']} proxies"] = s["per_proxy_quantiles"]
        for mode, s in r["wire_baseline"].items():
            series[f"wire baseline {mode}, {r['proxies']} proxies (from its push)"] = s[
                "per_proxy_quantiles"
            ]
    if len(runs) > 1:
        vs_n: dict[str, list[tuple[int, float]]] = {}
        for r in runs:
            for mode, s in r["xds_server"].items():
                for q in ("p50", "p99"):
                    if s["all_acked_s"].get(q) is not None:
                        vs_n.setdefault(f"{mode} {q}", []).append(
                            (r["proxies"], s["all_acked_s"][q])
                        )
        report.plot_vs_n(
            vs_n,
            ctx.results / "endpoint_flap_vs_n.png",
            "endpoint change: time until every proxy ACKed",
            "seconds",
        )
    report.plot_cdf(
        series,
        ctx.results / "endpoint_flap.png",
        "endpoint flap: per-proxy latency from the Consul change to the EDS ACK",
        marks={"1 s target": TARGET_P99},
    )
    return {"runs": runs, "targets": targets}
