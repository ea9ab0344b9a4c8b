"""mesh: N services (1,000), one simulated sidecar each; issuing, syncing and rotating.

The registry (static file) has one instance per service, with a sidecar on port 21000; the
store holds a ``Sidecar`` per service (the group named like it, one or two upstreams: the
next service, and for even ones also the one after) and an allow ``Intention`` per call, but
no ``Mesh`` yet. N sidecars (SotW, SDS included: ``bench.simulator.sidecar``) connect and
get nothing. Then:

1. **Turn-on**: ``PUT /v1/mesh`` (built-in CA, a short ``certificate_ttl``); the server
   generates the root, issues N identities, translates and pushes. Measured: wall time until
   every sidecar has ACKed its clusters, endpoints, listeners and both SDS secrets, and the
   server's process CPU seconds over that window (the target: ≤ 2 s for 1,000 services).
   For comparison, N leaves issued in this process (``issue_leaf``, CPU time).
2. **Rotation**: every leaf is re-issued at half its TTL, so a round comes every TTL/2.
   For each round: the server's CPU from just before the leaves are due until every sidecar
   ACKed its new identity (plus a second), minus the idle CPU rate measured between rounds
   over the same span. Extrapolated: at a 1 h TTL a round comes every 30 min, so
   ``CPU per round x 2 / 3600 s`` is the fraction of a core (target < 1 %).
3. **Bytes per rotation per proxy**: what each sidecar received during the rounds, per type;
   only SDS should travel (SotW sends the secrets by name, so only the
   changed secret: the identity, ~1.2 KB), nothing else.
4. **Worst case for rotation** (in this process, informative): leaves issued together renew
   together (one rebuild per round); leaves issued at different times (services added over
   the day) renew alone, each costing a pipeline build (a translation, which rebuilds only
   that sidecar's resources, and the snapshot of its group). That cost is measured here
   (``SnapshotPipeline.build_now`` after one identity changed, as the server runs it) and
   extrapolated the same way.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Final

import yaml

from bench import report
from bench.procs import ServerUnderTest, wait_serving
from bench.scenarios.common import fleet_spec, sync_timeout
from bench.simulator.sidecar import SidecarFleet
from bench.stack import Context, Stack
from bench.workload import seed_store, service_name

TARGET_ISSUE_CPU_S: Final = 2.0
TARGET_ROTATION_CORE_PERCENT: Final = 1.0
#: The TTL the rotation figure is extrapolated to.
REFERENCE_TTL_S: Final = 3600.0
TRUST_DOMAIN: Final = "mesh.bench"
INBOUND_PORT: Final = 21000
APP_PORT: Final = 8080
FIRST_UPSTREAM_PORT: Final = 9001
#: Idle CPU is measured over this window, ending this long before the first round is due.
_QUIET_MARGIN_S: Final = 2.0


def group_of(index: int) -> str:
    """Sidecar ``index`` is in the group named like its service (picklable for workers)."""
    return service_name(index)


def upstreams_of(index: int, services: int) -> list[int]:
    """One or two upstreams: the next service; for even ones also the one after."""
    found = [(index + 1) % services]
    if index % 2 == 0:
        found.append((index + 2) % services)
    return [u for u in dict.fromkeys(found) if u != index]


def registry(services: int) -> dict[str, Any]:
    return {
        "services": {
            service_name(i): {
                "endpoints": [
                    {
                        "address": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                        "port": APP_PORT,
                        "sidecar_port": INBOUND_PORT,
                    }
                ]
            }
            for i in range(services)
        }
    }


def documents(services: int) -> list[dict[str, Any]]:
    """A ``Sidecar`` per service and an allow ``Intention`` per upstream call (no Mesh)."""
    docs: list[dict[str, Any]] = []
    for i in range(services):
        name = service_name(i)
        upstreams = upstreams_of(i, services)
        docs.append(
            {
                "kind": "Sidecar",
                "name": name,
                "spec": {
                    "inbound": {
                        "port": INBOUND_PORT,
                        "local_address": "127.0.0.1",
                        "local_port": APP_PORT,
                        "protocol": "http",
                    },
                    "upstreams": [
                        {
                            "service": service_name(u),
                            "local_port": FIRST_UPSTREAM_PORT + k,
                            "protocol": "http",
                        }
                        for k, u in enumerate(upstreams)
                    ],
                },
            }
        )
        for u in upstreams:
            docs.append(
                {
                    "kind": "Intention",
                    "name": f"{name}-to-{service_name(u)}",
                    "spec": {"source": name, "destination": service_name(u), "action": "allow"},
                }
            )
    return docs


def mesh_document(ttl_s: int) -> dict[str, Any]:
    return {
        "kind": "Mesh",
        "name": "mesh",
        "spec": {
            "trust_domain": TRUST_DOMAIN,
            "mtls": "strict",
            "default_action": "deny",
            "certificate_ttl": f"{ttl_s // 60}m" if ttl_s % 60 == 0 else f"{ttl_s}s",
            "ca": {"provider": "builtin"},
        },
    }


class MeshStack(Stack):
    """The server with the mesh registry and documents (no edge config, no Mesh yet)."""

    def __init__(self, ctx: Context, name: str, services: int) -> None:
        super().__init__(ctx, "static", name)
        self.services = services

    def start(self) -> None:
        path = self.dir / "registry.yaml"
        path.write_text(yaml.safe_dump(registry(self.services), sort_keys=True))
        store = self.dir / "store.db"
        seed_store(store, documents(self.services))
        profile = self.ctx.results / f"profile-{self.name}.txt" if self.ctx.profile else None
        self.server = ServerUnderTest(
            f"static:{path}", f"sqlite:{store}", self.dir / "server.log", profile=profile
        )
        self.server.start()
        self.serving_after = wait_serving(self.server.ads, 0)
        _wait_ready(self)


def _wait_ready(stack: Stack, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _ = stack.admin.request("GET", "/readyz")
        if status == 200:
            return
        time.sleep(0.1)
    raise TimeoutError("the server did not become ready")


def issue_in_process(services: int, ttl_s: int) -> dict[str, float]:
    """CPU seconds of ``generate_root`` and of ``issue_leaf`` x ``services`` here."""
    from xds_server.mesh.ca import generate_root, issue_leaf

    now = dt.datetime.now(dt.UTC)
    started = time.process_time()
    root = generate_root(TRUST_DOMAIN, now)
    rooted = time.process_time()
    ttl = dt.timedelta(seconds=ttl_s)
    for i in range(services):
        issue_leaf(root, TRUST_DOMAIN, service_name(i), now, ttl)
    done = time.process_time()
    return {
        "root_cpu_s": rooted - started,
        "leaves_cpu_s": done - rooted,
        "per_leaf_ms": 1000 * (done - rooted) / max(1, services),
    }


def inventory_of(services: int) -> Any:
    """The registry as an in-process ``Inventory`` (each instance with its sidecar)."""
    from xds_server.model.inventory import Endpoint, Inventory, Service

    found = {}
    for name, spec in registry(services)["services"].items():
        address = spec["endpoints"][0]["address"]
        found[name] = Service(
            name,
            (Endpoint(address=address, port=APP_PORT),),
            (Endpoint(address=address, port=INBOUND_PORT),),
        )
    return Inventory.of(found)


def config_of(services: int, ttl_s: int) -> Any:
    """The documents and the ``Mesh`` as an in-process ``Config``."""
    from xds_server.model.config import Config

    docs = [*documents(services), mesh_document(ttl_s)]
    return Config.from_documents(
        (d["kind"], d["name"], d["spec"], k + 1) for k, d in enumerate(docs)
    )


def rebuild_in_process(services: int, ttl_s: int, repeat: int = 5) -> dict[str, float]:
    """CPU seconds of the pipeline's work after one identity changes, here: what
    ``SnapshotPipeline.build_now`` does in the server (translate the whole mesh, build the
    snapshot of every group whose resources changed against the previous one, check and
    publish them), what a renewal that no other renewal coalesces with costs the server,
    besides issuing and pushing. ``cold_full_build_cpu_s``: the same for the turn-on."""
    import statistics
    from types import MappingProxyType

    from xds_server.cache.snapshot_cache import SnapshotCache
    from xds_server.mesh.ca import generate_root, issue_leaf
    from xds_server.model.workload import Identities
    from xds_server.pipeline.snapshots import SnapshotPipeline
    from xds_server.translate import translate

    inventory, config = inventory_of(services), config_of(services, ttl_s)
    now = dt.datetime.now(dt.UTC)
    ttl = dt.timedelta(seconds=ttl_s)
    root = generate_root(TRUST_DOMAIN, now)
    leaves = {
        service_name(i): issue_leaf(root, TRUST_DOMAIN, service_name(i), now, ttl)
        for i in range(services)
    }
    pipeline = SnapshotPipeline(SnapshotCache(), translate, inventory, config)
    pipeline.build_now()  # before the mesh has identities: no sidecar resources yet

    def build() -> float:
        pipeline.set_identities(Identities(MappingProxyType(dict(leaves)), (root.trust_anchor,)))
        started = time.process_time()
        result = pipeline.build_now()
        spent = time.process_time() - started
        if result is None or result.error is not None:
            raise RuntimeError(f"in-process build failed: {result}")
        return spent

    cold = build()
    times = []
    for k in range(repeat):
        service = service_name(k % services)
        leaves[service] = issue_leaf(root, TRUST_DOMAIN, service, now, ttl)
        times.append(build())
    return {"cold_full_build_cpu_s": cold, "one_identity_rebuild_cpu_s": statistics.median(times)}


def _renew_at(stack: Stack) -> list[float]:
    """Monotonic times at which the server re-issues each identity (from ``GET /v1/mesh``)."""
    status, body = stack.admin.request("GET", "/v1/mesh")
    if status != 200:
        raise RuntimeError(f"GET /v1/mesh: {status} {body}")
    offset = time.time() - time.monotonic()
    return sorted(
        dt.datetime.fromisoformat(i["renew_at"]).timestamp() - offset
        for i in body["status"]["identities"]
    )


def _cpu(stack: Stack, start: float, end: float) -> tuple[float, float]:
    """(server CPU seconds, seconds) between two monotonic times, from the sampler."""
    window = stack.window(start, end)
    return window.get("cpu_seconds", float("nan")), end - start


def _turn_on(
    ctx: Context, stack: MeshStack, fleet: SidecarFleet, n: int, ttl_s: int
) -> dict[str, Any]:
    time.sleep(0.5)  # a sample of the sampler before the PUT
    at = time.monotonic()
    status, body = stack.admin.request("PUT", "/v1/mesh", mesh_document(ttl_s))
    put_s = time.monotonic() - at
    if status >= 300:
        raise RuntimeError(f"PUT /v1/mesh: {status} {body}")
    reached = fleet.wait_identity(1, sync_timeout(n))
    synced = [p["mesh_synced"] - at for p in fleet.results() if p["mesh_synced"]]
    end = at + max(synced) if len(synced) == n else time.monotonic()
    time.sleep(0.5)  # the sampler's next sample, after the last ACK
    cpu_s, span = _cpu(stack, at - 0.3, end + 0.3)
    _, mesh = stack.admin.request("GET", "/v1/mesh")
    return {
        "put_s": put_s,
        "sidecars_synced": reached["mesh_synced"],
        "failed": reached["failed"],
        "all_synced_s": max(synced) if len(synced) == n else None,
        "sync_time_s": report.stats(synced),
        "server_cpu_s": cpu_s,
        "cpu_window_s": span,
        "issued_total": mesh["status"]["issued_total"] if isinstance(mesh, dict) else None,
    }


def _rounds(
    ctx: Context, stack: MeshStack, fleet: SidecarFleet, n: int, ttl_s: int, rounds: int
) -> dict[str, Any]:
    renew = _renew_at(stack)
    period = ttl_s / 2
    first_due = renew[0]
    # Idle: from now (everything synced) until just before the first round.
    quiet_start = time.monotonic() + 1.0
    quiet_end = first_due - _QUIET_MARGIN_S
    fleet.record(True)
    per_round: list[dict[str, Any]] = []
    idle_rate = float("nan")
    for r in range(1, rounds + 1):
        due = first_due + (r - 1) * period
        if r == 1:
            time.sleep(max(0.0, quiet_end - time.monotonic()))
            idle_cpu, idle_span = _cpu(stack, quiet_start, quiet_end)
            idle_rate = idle_cpu / idle_span if idle_span > 1 else float("nan")
        time.sleep(max(0.0, due - 1.0 - time.monotonic()))
        ctx.say(f"mesh: rotation round {r}/{rounds} (identities due now)")
        reached = fleet.wait_identity(1 + r, period + sync_timeout(n))
        last_ack = max(p["identity_changes"][r][1] for p in fleet.results() if _has(p, r))
        time.sleep(max(0.0, last_ack + 1.5 - time.monotonic()))
        start, end = due - 1.0, last_ack + 1.0
        cpu_s, span = _cpu(stack, start, end)
        acks = [p["identity_changes"][r][1] - due for p in fleet.results() if _has(p, r)]
        per_round.append(
            {
                "round": r,
                "renewed": reached["at_least"],
                "all_acked_after_due_s": max(acks) if len(acks) == n else None,
                "ack_after_due_s": report.stats(acks),
                "server_cpu_s": cpu_s,
                "window_s": span,
                "idle_cpu_s": idle_rate * span,
                "rotation_cpu_s": cpu_s - idle_rate * span,
            }
        )
    totals = fleet.totals()
    fleet.record(False)
    by_type = {
        short: {
            "responses": sum(r[1] for r in rows),
            "bytes": sum(r[2] for r in rows),
            "resources": sum(r[3] for r in rows),
        }
        for short, rows in sorted(totals.items())
    }
    return {"idle_cpu_rate": idle_rate, "rounds": per_round, "received_by_type": by_type}


def _has(proxy: dict[str, Any], r: int) -> bool:
    return len(proxy["identity_changes"]) > r


def run(ctx: Context) -> dict[str, Any]:
    n = max(ctx.proxies)
    ttl_s = 60 if ctx.quick else 180
    rounds = 2 if ctx.quick else 3
    stack = MeshStack(ctx, f"mesh-{n}", n)
    with stack:
        ctx.say(f"mesh: {n} services, {n} sidecars connect (no Mesh yet)")
        spec = fleet_spec(ctx, stack.ads, n, prefix="sidecar")
        with SidecarFleet(spec, group_of) as fleet:
            connected = fleet.wait_synced(sync_timeout(n))
            ctx.say(f"mesh: PUT /v1/mesh (certificate_ttl {ttl_s} s): issue and sync {n}")
            turn_on = _turn_on(ctx, stack, fleet, n, ttl_s)
            sample = fleet.results()[0]
            ctx.say(f"mesh: {rounds} rotation rounds, one every {ttl_s // 2} s")
            rotation = _rounds(ctx, stack, fleet, n, ttl_s, rounds)
    in_process = {**issue_in_process(n, ttl_s), **rebuild_in_process(n, ttl_s)}
    data = _figures(n, ttl_s, connected, turn_on, sample, rotation, in_process)
    ctx.say(f"mesh: rotation at a 1 h TTL: {data['rotation']['arithmetic']}")
    ctx.say(
        "mesh: ... if no renewal coalesced: "
        f"{data['rotation']['arithmetic_if_no_renewal_coalesced']}"
    )
    return data


def _figures(
    n: int,
    ttl_s: int,
    connected: dict[str, int],
    turn_on: dict[str, Any],
    sample: dict[str, Any],
    rotation: dict[str, Any],
    in_process: dict[str, float],
) -> dict[str, Any]:
    rounds = rotation["rounds"]
    per_round = sum(r["rotation_cpu_s"] for r in rounds) / max(1, len(rounds))
    rounds_per_hour = 3600.0 / (REFERENCE_TTL_S / 2)
    core_percent = 100.0 * per_round * rounds_per_hour / 3600.0
    arithmetic = (
        f"{per_round:.3f} s CPU per round x {rounds_per_hour:.0f} rounds/h (re-issue at half a "
        f"{REFERENCE_TTL_S / 3600:.0f} h TTL) / 3600 s = {core_percent:.4f} % of a core"
    )
    # Worst case: renewals spread over the period, none coalescing with another, so each one
    # is a leaf plus a whole rebuild (measured in this process; pushing one secret is small).
    alone_s = in_process["one_identity_rebuild_cpu_s"] + in_process["per_leaf_ms"] / 1000
    spread_percent = 100.0 * alone_s * n * rounds_per_hour / 3600.0
    spread_arithmetic = (
        f"{n} renewals x {rounds_per_hour:.0f}/h x ({alone_s * 1000:.1f} ms rebuild + leaf) "
        f"/ 3600 s = {spread_percent:.2f} % of a core"
    )
    by_type = rotation["received_by_type"]
    renewals = n * len(rounds)
    sds = by_type.get("sds", {"bytes": 0, "responses": 0})
    others = {t: v for t, v in by_type.items() if t != "sds" and v["bytes"]}
    sds_per = sds["bytes"] / max(1, renewals)
    full_size = n >= 1000
    issue_goal = TARGET_ISSUE_CPU_S * max(1.0, n / 1000)
    targets = [
        report.target(
            f"mesh turn-on: issue {n} identities, all {n} sidecars synced (SDS ACKed)",
            "informative",
            report.fmt(turn_on["all_synced_s"], "s")
            if turn_on["all_synced_s"] is not None
            else f"{turn_on['sidecars_synced']}/{n} synced",
            None,
        ),
        report.target(
            f"server CPU to issue and sync {n} identities",
            f"≤ {issue_goal:.0f} s CPU" + ("" if full_size else " (at 1,000 services)"),
            f"{turn_on['server_cpu_s']:.2f} s",
            turn_on["server_cpu_s"] <= issue_goal if full_size else None,
        ),
        report.target(
            f"rotation CPU at a 1 h TTL ({n} services)",
            f"< {TARGET_ROTATION_CORE_PERCENT:g} % of a core"
            + ("" if full_size else " (at 1,000 services)"),
            f"{core_percent:.3f} % ({per_round:.2f} s per round x 2/h)",
            core_percent < TARGET_ROTATION_CORE_PERCENT if full_size else None,
        ),
        report.target(
            "... if no renewal coalesced with another (in-process estimate)",
            "informative",
            f"{spread_percent:.2f} % ({alone_s * 1000:.0f} ms per renewal alone)",
            None,
        ),
        report.target(
            "SDS bytes per rotation per proxy",
            "informative",
            f"{sds_per:.0f} B ({sds['responses'] / max(1, renewals):.2f} responses)",
            None,
        ),
        report.target(
            "other resources re-sent by a rotation",
            "none",
            "none" if not others else ", ".join(f"{t} {v['bytes']} B" for t, v in others.items()),
            not others,
        ),
    ]
    return {
        "services": n,
        "sidecars": n,
        "certificate_ttl_s": ttl_s,
        "connected_before_mesh": connected,
        "sidecar_example": {k: sample[k] for k in ("node", "listeners", "clusters", "secrets")},
        "turn_on": turn_on,
        "issue_in_bench_process": in_process,
        "rotation": {
            **rotation,
            "rotation_cpu_per_round_s": per_round,
            "rounds_per_hour_at_1h_ttl": rounds_per_hour,
            "core_percent_at_1h_ttl": core_percent,
            "arithmetic": arithmetic,
            "core_percent_at_1h_ttl_if_no_renewal_coalesced": spread_percent,
            "arithmetic_if_no_renewal_coalesced": spread_arithmetic,
            "sds_bytes_per_rotation_per_proxy": sds_per,
            "other_bytes_per_rotation_per_proxy": {
                t: v["bytes"] / max(1, renewals) for t, v in others.items()
            },
        },
        "targets": targets,
        "notes": [arithmetic, spread_arithmetic],
    }
