"""fleet: one fleet across replicas (issue 18): 3 replicas sharing ``--store consul-kv`` on
the Consul double, N simulated proxies on each.

- **Propagation**: a probe proxy connects to one replica (rotating); the time from its first
  response (the origin's registry has it) until every other replica's ``/v1/proxies/{id}``
  lists it, and after it leaves until they no longer do. Target: within 2 s (p99).
- **Consul writes per second**, from the double: the writes that touch the fleet's keys
  (``txn``) and ``PUT /v1/session/renew``, while nothing changes and while a route write every
  second makes every proxy ACK new versions (each replica writes at most once a second).
  ``store_txn`` counts every ``PUT /v1/txn`` (the config store's reads and writes too).

No baseline: the fleet view is new (a replica showed its own proxies only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from bench import report
from bench.procs import ServerUnderTest, wait_serving
from bench.scenarios.common import connect, fleet_spec
from bench.simulator.fleet import Fleet
from bench.stack import REPO, Context
from bench.workload import AdminClient

TARGET_S = 2.0
STORE = "bench/fleet"
#: Where the replicas publish (``app.fleet_prefix``).
FLEET_PREFIX = f"{STORE}-fleet/"
REPLICAS = 3
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def _listed(admin: str, node_id: str) -> bool:
    try:
        with urllib.request.urlopen(f"{admin}/v1/proxies/{node_id}", timeout=10) as answer:
            return bool(answer.status == 200)
    except urllib.error.HTTPError:
        return False


@contextlib.contextmanager
def probe(ads: str, node_id: str) -> Iterator[float]:
    """One ADS stream as ``node_id``; yields the time of its first response."""
    import grpc
    from envoy.service.discovery.v3 import discovery_pb2

    requests: queue.Queue[Any] = queue.Queue()
    first = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
    first.node.id = node_id
    first.node.cluster = "probe"
    requests.put(first)

    def outgoing() -> Iterator[Any]:
        while (item := requests.get()) is not None:
            yield item

    channel = grpc.insecure_channel(ads)
    stream = channel.stream_stream(
        ADS_METHOD,
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )
    responses = stream(outgoing())
    try:
        next(responses)
        yield time.monotonic()
    finally:
        requests.put(None)
        responses.cancel()
        channel.close()


def _wait_all(admins: list[str], node_id: str, present: bool, timeout: float) -> list[float]:
    """Monotonic time each of ``admins`` first answered ``present`` for ``node_id``."""
    times: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(times) < len(admins) and time.monotonic() < deadline:
        for i, admin in enumerate(admins):
            if i not in times and _listed(admin, node_id) == present:
                times[i] = time.monotonic()
        time.sleep(0.02)
    return [times.get(i, float("nan")) for i in range(len(admins))]


def _writes(consul: Any) -> dict[str, int]:
    return {
        "txn": consul.kv_writes(FLEET_PREFIX),
        "store_txn": consul.request_count("/v1/txn", "PUT"),
        "renew": consul.request_count("/v1/session/renew", "PUT"),
        "create": consul.request_count("/v1/session/create", "PUT"),
    }


def _rate(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    return {k: (after[k] - before[k]) / seconds for k in before}


def run(ctx: Context) -> dict[str, Any]:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.consul_double import ConsulDouble

    n = 300 if ctx.quick else ctx.proxies[0]
    samples = 6 if ctx.quick else 20
    window = 5.0 if ctx.quick else 15.0
    # The fleet view does not depend on the config's size: a small one keeps 3 servers and
    # 3N proxies within this machine.
    workload = dataclasses.replace(ctx.workload, services=50, endpoints=2, routes=5)
    directory = ctx.work / "fleet"
    directory.mkdir(parents=True, exist_ok=True)
    registry = directory / "registry.yaml"
    workload.write_registry(registry)
    consul = ConsulDouble(jitter=False, consul_service=False)
    consul.start()
    servers: list[ServerUnderTest] = []
    fleets: list[Fleet] = []
    try:
        env = {"CONSUL_HTTP_ADDR": f"127.0.0.1:{consul.port}", "XDS_SERVER_FLEET_TTL": "10s"}
        for i in range(REPLICAS):
            server = ServerUnderTest(
                f"static:{registry}",
                f"consul-kv:{STORE}",
                directory / f"replica-{i}.log",
                env=env,
                extra=["--replica-id", f"replica-{i}"],
            )
            servers.append(server.start())
        AdminClient(servers[0].admin).apply(workload.documents())
        for server in servers:
            wait_serving(server.ads, workload.services)
        ctx.say(f"fleet: {REPLICAS} replicas x {n} simulated proxies")
        syncs = []
        for i, server in enumerate(servers):
            spec = dataclasses.replace(fleet_spec(ctx, server.ads, n, prefix=f"r{i}"), ramp=2.0)
            fleet = Fleet(spec)
            fleet.start()
            fleets.append(fleet)
        for fleet in fleets:
            syncs.append(connect(fleet, n))
        admins = [s.admin for s in servers]
        listed = [_wait_all(admins, f"r{i}-00000", True, 30.0) for i in range(REPLICAS)]
        ctx.say(f"fleet: every replica lists every fleet ({listed and 'ok'})")
        time.sleep(2.0)  # let the initial summaries settle

        quiet_before = _writes(consul)
        time.sleep(window)
        quiet = _rate(quiet_before, _writes(consul), window)

        churn_before = _writes(consul)
        started = time.monotonic()
        writes = 0
        while time.monotonic() - started < window:
            AdminClient(admins[writes % REPLICAS]).put(
                workload.route_document(0, timeout=f"{10 + writes % 20}s")
            )
            writes += 1
            time.sleep(max(0.0, started + writes - time.monotonic()))
        churn_seconds = time.monotonic() - started
        churn = _rate(churn_before, _writes(consul), churn_seconds)

        appear: list[float] = []
        leave: list[float] = []
        for k in range(samples):
            origin = k % REPLICAS
            others = [a for i, a in enumerate(admins) if i != origin]
            node_id = f"probe-{k:03d}"
            with probe(servers[origin].ads, node_id) as connected_at:
                seen = _wait_all(others, node_id, True, 10.0)
                appear.extend(t - connected_at for t in seen)
            gone_at = time.monotonic()
            gone = _wait_all(others, node_id, False, 10.0)
            leave.extend(t - gone_at for t in gone)
    finally:
        for fleet in fleets:
            with contextlib.suppress(Exception):
                fleet.close()
        for server in servers:
            server.stop()
        consul.stop()

    appear_stats = report.stats([t for t in appear if t == t])
    leave_stats = report.stats([t for t in leave if t == t])
    missed = sum(1 for t in appear + leave if t != t)
    p99 = appear_stats.get("p99", float("nan"))
    p99_leave = leave_stats.get("p99", float("nan"))
    targets = [
        report.target(
            f"a proxy reaches every replica's fleet view ({REPLICAS} x {n}), p99",
            f"≤ {TARGET_S:g} s",
            f"{p99:.2f} s (leaves: {p99_leave:.2f} s; {missed} missed)",
            p99 <= TARGET_S and p99_leave <= TARGET_S and missed == 0,
        ),
        report.target(
            "Consul writes/s, all replicas: idle / a route write every second",
            f"summaries ≤ {REPLICAS} /s (one per replica per second)",
            f"{quiet['txn'] + quiet['renew']:.2f} / {churn['txn'] + churn['renew']:.2f} "
            f"(summaries {quiet['txn']:.2f} / {churn['txn']:.2f}, renewals "
            f"{quiet['renew']:.2f} / {churn['renew']:.2f})",
            churn["txn"] <= REPLICAS * 1.1,
        ),
    ]
    return {
        "replicas": REPLICAS,
        "proxies_per_replica": n,
        "initial_sync": [{k: s[k] for k in ("all_synced_s", "synced", "failed")} for s in syncs],
        "appear_s": appear_stats,
        "leave_s": leave_stats,
        "missed": missed,
        "consul_writes_per_s": {"idle": quiet, "route_write_every_second": churn},
        "route_writes": writes,
        "targets": targets,
    }
