"""A real Envoy follows the snapshots the cache serves (go-control-plane's integration test).

Envoy starts from ``envoy/bootstrap.yaml`` (pointed at the test's port), receives a listener,
route, cluster and endpoints, and proxies HTTP to a local upstream. The snapshot is then
replaced three times, renaming the cluster and the route each time; after each change, once
Envoy's /config_dump shows the new version, every request succeeds and reaches the new
upstream. Finally a resource Envoy must reject is served: the NACK is recorded with Envoy's
own message and Envoy keeps serving the last good config.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import resources as r
from tests.support.envoy import Envoy, bootstrap, free_port, http_get, running_envoy, wait_for
from tests.support.server_thread import ThreadedXds
from tests.support.upstream import upstreams
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.types import CLUSTER
from xds_server.status import SyncStatus

pytestmark = pytest.mark.envoy

MODES = {
    "ads-sotw": {"api_type": "GRPC", "per_type": False},
    "ads-delta": {"api_type": "DELTA_GRPC", "per_type": False},
    "per-type-sotw": {"api_type": "GRPC", "per_type": True},
    "per-type-delta": {"api_type": "DELTA_GRPC", "per_type": True},
}


@pytest.fixture
def server() -> Iterator[ThreadedXds]:
    threaded = ThreadedXds().start()
    try:
        yield threaded
    finally:
        threaded.stop()


def version_snapshot(
    i: int, upstream_port: int, listener_port: int, source: Any, timeout_ms: int = 1000
) -> Snapshot:
    cluster, route = f"cluster-{i}", f"route-{i}"
    return Snapshot.build(
        [
            r.cluster(cluster, connect_timeout_ms=timeout_ms, source=source),
            r.endpoints(cluster, upstream_port),
            r.route_config(route, cluster),
            r.listener("http", listener_port, route, source=source),
        ]
    )


def active(envoy: Envoy) -> tuple[set[str], set[str], set[str]]:
    """(active clusters, route configurations, active listeners' RDS names) in Envoy."""
    clusters: set[str] = set()
    routes: set[str] = set()
    listener_routes: set[str] = set()
    for config in envoy.config_dump()["configs"]:
        kind = config["@type"].rsplit(".", 1)[-1]
        if kind == "ClustersConfigDump":
            if config.get("dynamic_warming_clusters"):
                continue
            clusters |= {c["cluster"]["name"] for c in config.get("dynamic_active_clusters", [])}
        elif kind == "RoutesConfigDump":
            routes |= {c["route_config"]["name"] for c in config.get("dynamic_route_configs", [])}
        elif kind == "ListenersConfigDump":
            for listener in config.get("dynamic_listeners", []):
                state = listener.get("active_state")
                if state and not listener.get("warming_state"):
                    for chain in state["listener"]["filter_chains"]:
                        for network_filter in chain["filters"]:
                            rds = network_filter["typed_config"].get("rds", {})
                            listener_routes.add(rds.get("route_config_name", ""))
    return clusters, routes, listener_routes


@pytest.mark.parametrize("mode", list(MODES))
def test_envoy_follows_renamed_snapshots_and_survives_a_nack(
    server: ThreadedXds, mode: str
) -> None:
    api_type = str(MODES[mode]["api_type"])
    per_type = bool(MODES[mode]["per_type"])
    source = r.grpc_source(api_type) if per_type else None
    listener_port = free_port()
    with (
        upstreams("v0", "v1", "v2", "v3") as backends,
        running_envoy(
            bootstrap(server.port, api_type=api_type, per_type=per_type, node_id=f"envoy-{mode}")
        ) as envoy,
    ):
        for i, backend in enumerate(backends):
            server.call(
                server.cache.set_snapshots,
                version_snapshot(i, backend.port, listener_port, source),
            )
            want = ({f"cluster-{i}"}, f"route-{i}")

            def converged(want: tuple[set[str], str] = want) -> bool:
                clusters, routes, listener_routes = active(envoy)
                return clusters == want[0] and listener_routes == {want[1]} and want[1] in routes

            wait_for(converged, 20, f"Envoy on version {i}", envoy.check_alive)
            answers = [http_get(listener_port) for _ in range(20)]
            assert answers and all(status == 200 for status, _, _ in answers), answers[:3]
            assert {body for _, body, _ in answers} == {f"v{i}"}

        # A cluster Envoy rejects (connect_timeout must be > 0), otherwise consistent.
        good = server.call(server.cache.snapshot_for, "default")
        bad = version_snapshot(3, backends[3].port, listener_port, source, timeout_ms=0)
        server.call(server.cache.set_snapshots, bad)

        def nack() -> str | None:
            status = server.registry.get(f"envoy-{mode}")
            if status is None or CLUSTER not in status.types:
                return None
            cds = status.types[CLUSTER]
            if cds.status is SyncStatus.NACKED and cds.last_nack is not None:
                return cds.last_nack.message
            return None

        message = wait_for(nack, 20, "Envoy's NACK", envoy.check_alive)
        print(f"{mode}: Envoy rejected the cluster with: {message}")
        assert "connect_timeout" in message.lower() or "ConnectTimeout" in message
        assert good is not bad
        answers = [http_get(listener_port) for _ in range(20)]
        assert {(status, body) for status, body, _ in answers} == {(200, "v3")}
