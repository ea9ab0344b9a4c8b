"""mass_change: every service's endpoints change at once (static registry); time until every
proxy has ACKed the last service's new ``ClusterLoadAssignment``, and the server's CPU for it.

What a registry-wide event costs (a datacenter's health checks flipping together, a registry
restored from a backup): every proxy receives every CLA again (385 KB per proxy at 1,000
services x 10 endpoints). Each round marks a different instance of every service unhealthy,
so every assignment changes every round. There is no target in the issues; the figures are
for comparison between versions.
"""

from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.scenarios.common import connect, fleet_spec
from bench.simulator.fleet import Change, Fleet
from bench.stack import Context, Stack
from bench.workload import service_name

TIMEOUT = 60.0


def run(ctx: Context) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    rounds = 1 if ctx.quick else 3
    modes = ["sotw"] if ctx.quick else ["sotw", "delta"]
    w = ctx.workload
    for n in ctx.proxies:
        for mode in modes:
            with Stack(ctx, "static", f"mass-{mode}-{n}") as stack:
                ctx.say(f"mass_change: {n} {mode} proxies, every endpoint set changes x{rounds}")
                acked: list[float] = []
                cpu: list[float] = []
                missing = 0
                with Fleet(fleet_spec(ctx, stack.ads, n, mode, prefix=f"mass-{mode}")) as fleet:
                    connect(fleet, n)
                    time.sleep(2.0)
                    for index in range(rounds):
                        fleet.record(True)
                        unhealthy = frozenset((s, index + 1) for s in range(w.services))
                        at = stack.rewrite_registry(unhealthy)
                        last = service_name(w.services - 1)
                        result = fleet.wait_change(Change("eds", last, at), TIMEOUT)
                        end = time.monotonic()
                        fleet.record(False)
                        time.sleep(1.0)  # the server's CPU samples cover the whole push
                        if result.all_acked is None:
                            missing += result.missing
                        else:
                            acked.append(result.all_acked)
                        cpu.append(stack.window(at, end).get("cpu_seconds", float("nan")))
                runs.append(
                    {
                        "proxies": n,
                        "mode": mode,
                        "rounds": rounds,
                        "all_acked_s": acked,
                        "server_cpu_s": cpu,
                        "proxies_missing": missing,
                    }
                )
                targets.append(
                    report.target(
                        f"every endpoint set changes → all {n} ({mode}) ACKed",
                        "informative",
                        ", ".join(f"{a:.2f} s" for a in acked) or "none converged",
                        None,
                    )
                )
                targets.append(
                    report.target(
                        f"server CPU per mass change ({mode}, {n})",
                        "informative",
                        ", ".join(f"{c:.2f} s" for c in cpu),
                        None,
                    )
                )
    return {"runs": runs, "targets": targets}
