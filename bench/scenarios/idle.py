"""idle: the server's RSS and CPU with N proxies connected and nothing changing.

Memory per proxy beyond the shared snapshot = (RSS with N synced proxies - RSS with none) / N.
"""

from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.scenarios.common import connect, fleet_spec
from bench.simulator.fleet import Change, Fleet
from bench.stack import Context, Stack
from bench.workload import service_name

#: Issue 18: per idle proxy, and once every endpoint set changed (SotW).
TARGET_KB = 40.0
TARGET_CHANGED_KB = 80.0


def run(ctx: Context) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    quiet = 5.0 if ctx.quick else 15.0
    modes = ["sotw"] if ctx.quick else ["sotw", "delta"]
    w = ctx.workload
    for n in ctx.proxies:
        for mode in modes:
            with Stack(ctx, "static", f"idle-{mode}-{n}") as stack:
                time.sleep(2.0)
                rss0 = stack.rss_now(2.0)
                ctx.say(f"idle: {n} {mode} proxies, then {quiet:.0f} s of nothing")
                with Fleet(fleet_spec(ctx, stack.ads, n, mode, prefix=f"idle-{mode}")) as fleet:
                    sync = connect(fleet, n)
                    time.sleep(3.0)
                    start = time.monotonic()
                    time.sleep(quiet)
                    end = time.monotonic()
                    window = stack.window(start, end)
                    rss_n = stack.rss_now(1.0)
                    # Then every service's endpoints change once (each stream now holds its
                    # own versions instead of the shared ones) and everything settles again.
                    fleet.record(True)
                    at = stack.rewrite_registry(frozenset((i, 0) for i in range(w.services)))
                    last = fleet.wait_change(Change("eds", service_name(w.services - 1), at), 60)
                    fleet.record(False)
                    time.sleep(3.0)
                    rss_changed = stack.rss_now(2.0)
                per_proxy_kb = (rss_n - rss0) * 1024 / n
                per_proxy_changed_kb = (rss_changed - rss0) * 1024 / n
                runs.append(
                    {
                        "proxies": n,
                        "mode": mode,
                        "rss_without_proxies_mb": rss0,
                        "rss_with_proxies_mb": rss_n,
                        "per_proxy_kb": per_proxy_kb,
                        "rss_after_every_service_changed_mb": rss_changed,
                        "per_proxy_after_every_service_changed_kb": per_proxy_changed_kb,
                        "change_reached_all": last.missing == 0,
                        "idle_cpu_percent": window.get("cpu_percent"),
                        "initial_sync": {k: sync[k] for k in ("all_synced_s", "synced", "failed")},
                    }
                )
                targets.append(
                    report.target(
                        f"server memory per idle proxy ({mode}, {n})",
                        f"≤ {TARGET_KB:.0f} KB",
                        f"{per_proxy_kb:.0f} KB (RSS {rss0:.0f} → {rss_n:.0f} MB)",
                        per_proxy_kb <= TARGET_KB,
                    )
                )
                targets.append(
                    report.target(
                        f"... after every service's endpoints changed ({mode}, {n})",
                        f"≤ {TARGET_CHANGED_KB:.0f} KB",
                        f"{per_proxy_changed_kb:.0f} KB (RSS {rss_changed:.0f} MB)",
                        per_proxy_changed_kb <= TARGET_CHANGED_KB,
                    )
                )
                targets.append(
                    report.target(
                        f"idle server CPU ({mode}, {n})",
                        "informative",
                        f"{window.get('cpu_percent', float('nan')):.1f}%",
                        None,
                    )
                )
    return {"runs": runs, "targets": targets}
