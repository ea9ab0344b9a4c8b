"""bytes_per_change: bytes a proxy receives per endpoint change, SotW vs delta.

Each change makes one endpoint of a different service unhealthy (in the Consul double) and
waits until every proxy has ACKed it, so each change is its own snapshot. Bytes are counted
as received by the proxies (gRPC message bodies, without HTTP/2 framing).
"""

from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.scenarios.common import change_summary, connect, fleet_spec
from bench.simulator.fleet import Change, ChangeResult, Fleet
from bench.stack import Context, Stack
from bench.workload import service_name

TARGET_DELTA = 2048
MAX_PROXIES = 100


def run(ctx: Context) -> dict[str, Any]:
    n = min(max(ctx.proxies), MAX_PROXIES)
    changes = 5 if ctx.quick else 20
    per_mode: dict[str, Any] = {}
    with Stack(ctx, "consul", "bytes") as stack:
        for m, mode in enumerate(("sotw", "delta")):
            ctx.say(f"bytes_per_change: {n} {mode} proxies, {changes} endpoint changes")
            results: list[ChangeResult] = []
            with Fleet(fleet_spec(ctx, stack.ads, n, mode, prefix=f"bytes-{mode}")) as fleet:
                connect(fleet, n)
                time.sleep(1.0)
                fleet.record(True)
                for k in range(changes):
                    service = 10 + m * changes + k
                    at = stack.flap(service, 0, healthy=False)
                    results.append(
                        fleet.wait_change(Change("eds", service_name(service), at), 15.0)
                    )
                    time.sleep(0.3)
                totals = fleet.totals()
                fleet.record(False)
            by_type: dict[str, Any] = {}
            for type_short, rows in totals.items():
                by_type[type_short] = {
                    "responses": sum(r[1] for r in rows),
                    "bytes": sum(r[2] for r in rows),
                    "resources": sum(r[3] for r in rows),
                    "max_resources_in_one_response": max(r[4] for r in rows),
                }
            eds = by_type.get("eds", {"bytes": 0, "responses": 0, "resources": 0})
            all_bytes = sum(t["bytes"] for t in by_type.values())
            per_mode[mode] = {
                "proxies": n,
                "changes": changes,
                "eds_bytes_per_change_per_proxy": eds["bytes"] / changes / n,
                "all_bytes_per_change_per_proxy": all_bytes / changes / n,
                "eds_responses_per_change_per_proxy": eds["responses"] / changes / n,
                "eds_resources_per_response": eds["resources"] / max(1, eds["responses"]),
                "by_type": by_type,
                "latency": change_summary(results),
            }
    sotw, delta = per_mode["sotw"], per_mode["delta"]
    only_changed = sotw["by_type"].get("eds", {}).get("max_resources_in_one_response") == 1 and set(
        sotw["by_type"]
    ) == {"eds"}
    targets = [
        report.target(
            "delta bytes per endpoint change per proxy",
            f"< {TARGET_DELTA} B",
            f"{delta['all_bytes_per_change_per_proxy']:.0f} B",
            delta["all_bytes_per_change_per_proxy"] < TARGET_DELTA,
        ),
        report.target(
            "SotW bytes per endpoint change per proxy",
            "informative",
            f"{sotw['all_bytes_per_change_per_proxy']:.0f} B",
            None,
        ),
        report.target(
            "SotW sends EDS only for the changed cluster",
            "1 ClusterLoadAssignment per response, no other type",
            f"max {sotw['by_type'].get('eds', {}).get('max_resources_in_one_response')} per "
            f"response; types sent: {', '.join(sorted(sotw['by_type']))}",
            only_changed,
        ),
    ]
    return {"modes": per_mode, "targets": targets}
