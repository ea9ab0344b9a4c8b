"""Translation for proxyless gRPC clients (``translate.proxyless``): what gRPC's xDS client
accepts (gRFC A27, A28, A31, A42, A44), read back from the messages."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from tests.unit.model_builders import config_of, listener
from tests.unit.translate_helpers import as_dict, names
from xds_server.cache import consistency
from xds_server.cache.snapshot import Snapshot
from xds_server.model import Config, Inventory
from xds_server.model.inventory import Endpoint, Service
from xds_server.translate import translate
from xds_server.translate.output import ProxyResources
from xds_server.translate.proxyless import clusters, grpc_resources, routes

ECHO = Service(
    "echo",
    (
        Endpoint("10.0.0.1", 50051, weight=2, zone="a"),
        Endpoint("10.0.0.2", 50052, zone="a"),
        Endpoint("10.0.0.3", 50051, zone="b", priority=3),  # a gap: 0, 3
        Endpoint("echo.internal", 50051),  # not an IP literal: left out
    ),
)
ONE = Service("one", (Endpoint("10.0.1.1", 7000, metadata={"version": "v2"}),))
INVENTORY = Inventory.of({"echo": ECHO, "one": ONE})


def config(*documents: dict[str, Any]) -> Config:
    return config_of(listener(), *documents)


def route(rules: list[dict[str, Any]], hostnames: tuple[str, ...] = ("echo",)) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": "r",
        "spec": {"listeners": ["public"], "hostnames": list(hostnames), "rules": rules},
    }


def by_name(messages: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(names(messages), messages, strict=True))


def echo_routes(resources: ProxyResources) -> list[dict[str, Any]]:
    (vhost,) = by_name(resources.routes)["echo"].virtual_hosts
    assert list(vhost.domains) == ["echo", "echo:*"]
    return [as_dict(r) for r in vhost.routes]


def test_every_service_has_listeners_by_name_and_by_port_with_an_api_listener() -> None:
    resources = grpc_resources(INVENTORY, config())
    assert names(resources.listeners) == ["echo", "echo:50051", "echo:50052", "one", "one:7000"]
    api: Any
    for api in resources.listeners:
        manager = hcm_pb2.HttpConnectionManager()
        assert api.api_listener.api_listener.Unpack(manager)
        assert not api.HasField("address") and not api.filter_chains
        assert manager.rds.config_source.HasField("ads")
        assert manager.rds.route_config_name == api.name.split(":")[0]
        [router] = manager.http_filters  # one filter, the router, with its typed config
        assert router.name == "envoy.filters.http.router"
        assert router.typed_config.Unpack(router_pb2.Router())


def test_without_routes_every_call_goes_to_the_service_by_eds_round_robin() -> None:
    resources = grpc_resources(INVENTORY, config())
    assert echo_routes(resources) == [{"match": {"prefix": ""}, "route": {"cluster": "echo"}}]
    cluster = by_name(resources.clusters)["echo"]
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.eds_cluster_config.service_name == "echo"
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN


def test_assignments_have_ip_literals_weighted_localities_and_dense_priorities() -> None:
    cla = by_name(grpc_resources(INVENTORY, config()).endpoints)["echo"]
    got = [
        (
            lle.locality.zone,
            lle.priority,
            lle.load_balancing_weight.value,
            [e.endpoint.address.socket_address.address for e in lle.lb_endpoints],
        )
        for lle in cla.endpoints
    ]
    assert got == [("a", 0, 3, ["10.0.0.1", "10.0.0.2"]), ("b", 1, 1, ["10.0.0.3"])]
    one = by_name(grpc_resources(INVENTORY, config()).endpoints)["one"]
    assert not one.endpoints[0].lb_endpoints[0].HasField("metadata")


def test_a_route_naming_the_target_applies_what_grpc_honours() -> None:
    rules: list[dict[str, Any]] = [
        {
            "matches": [{"headers": [{"name": "x-canary", "exact": "yes"}]}],
            "backends": [{"service": "one"}],
        },
        {
            "matches": [
                {"grpc": {"service": "pkg.Echo"}},
                {"query_params": [{"name": "q", "present": True}]},
            ],
            "backends": [{"service": "echo", "weight": 80}, {"service": "one", "weight": 20}],
            "retry": {"retry_on": ["unavailable", "5xx", "cancelled"], "num_retries": 9},
            "timeouts": {"request": "200ms", "grpc_max": "5s"},
        },
        {"matches": [{"path": {"prefix": "/old"}}], "filters": {"redirect": {"path": "/new"}}},
    ]
    got = echo_routes(grpc_resources(INVENTORY, config(route(rules))))
    assert got[0] == {
        "match": {
            "prefix": "",
            "headers": [{"name": "x-canary", "string_match": {"exact": "yes"}}],
        },
        "route": {"cluster": "one"},
    }
    # The query match and the redirect rule are left out; the catch-all stays last.
    assert len(got) == 3 and got[2] == {"match": {"prefix": ""}, "route": {"cluster": "echo"}}
    action = got[1]["route"]
    assert got[1]["match"] == {"prefix": "/pkg.Echo/"}
    assert action["weighted_clusters"]["clusters"] == [
        {"name": "echo", "weight": 80},
        {"name": "one", "weight": 20},
    ]
    assert action["retry_policy"] == {"retry_on": "unavailable,cancelled", "num_retries": 4}
    assert action["max_stream_duration"] == {
        "max_stream_duration": "0.200s",
        "grpc_timeout_header_max": "5s",
    }
    assert "timeout" not in action


def test_routes_naming_other_hosts_do_not_apply() -> None:
    rules = [{"backends": [{"service": "one"}]}]
    resources = grpc_resources(INVENTORY, config(route(rules, ("example.com",))))
    assert echo_routes(resources) == [{"match": {"prefix": ""}, "route": {"cluster": "echo"}}]


def test_load_balancing_ring_hash_with_header_hashing_else_round_robin() -> None:
    ring = {
        "kind": "ServicePolicy",
        "name": "echo",
        "spec": {
            "load_balancing": {"policy": "ring_hash", "hash_policies": [{"header": "x-user"}]}
        },
    }
    least = {
        "kind": "ServicePolicy",
        "name": "one",
        "spec": {"load_balancing": {"policy": "least_request"}},
    }
    resources = grpc_resources(INVENTORY, config(ring, least))
    echo = by_name(resources.clusters)["echo"]
    assert echo.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert echo.ring_hash_lb_config.hash_function == cluster_pb2.Cluster.RingHashLbConfig.XX_HASH
    assert by_name(resources.clusters)["one"].lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert echo_routes(resources)[-1]["route"]["hash_policy"] == [
        {"header": {"header_name": "x-user"}}
    ]


def test_subsets_are_clusters_of_their_own_and_the_snapshot_is_consistent() -> None:
    policy: dict[str, Any] = {
        "kind": "ServicePolicy",
        "name": "one",
        "spec": {"subsets": [{"name": "v2", "metadata": {"version": "v2"}}]},
    }
    rules = [{"backends": [{"service": "one", "subset": "v2"}]}]
    resources = grpc_resources(INVENTORY, config(policy, route(rules)))
    assert "one~v2" in names(resources.clusters) and "one~v2" in names(resources.endpoints)
    assert echo_routes(resources)[0]["route"] == {"cluster": "one~v2"}
    assert consistency.problems(Snapshot.build(resources.messages())) == []
    # With a default subset, the target's catch-all goes to it too.
    default = {**policy, "spec": {**policy["spec"], "default_subset": "v2"}}
    resources = grpc_resources(INVENTORY, config(default))
    (vhost,) = by_name(resources.routes)["one"].virtual_hosts
    assert vhost.routes[-1].route.cluster == "one~v2"
    assert consistency.problems(Snapshot.build(resources.messages())) == []


def test_translate_carries_the_grpc_part_and_caches_change_nothing() -> None:
    documents = config(route([{"backends": [{"service": "one"}]}]))
    first = translate(INVENTORY, documents).grpc
    clusters.clear_caches()
    routes.clear_caches()
    again = translate(INVENTORY, documents).grpc
    serialise = lambda r: [m.SerializeToString(deterministic=True) for m in r.messages()]  # noqa: E731
    assert serialise(first) == serialise(again) and first.listeners
    # Envoy's resources are Envoy's own: no api_listener among them.
    envoy_listeners = translate(INVENTORY, documents).default.listeners
    assert envoy_listeners and all(not m.HasField("api_listener") for m in envoy_listeners)
