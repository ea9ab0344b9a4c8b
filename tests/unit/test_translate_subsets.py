"""Subsets -> one EDS cluster and assignment each (``<service>~<subset>``); routes name them;
the default subset follows at lower priorities; slow start on the cluster."""

from __future__ import annotations

from typing import Any

from tests.unit.model_builders import config_of, doc, listener, route
from tests.unit.translate_helpers import as_dict, default_resources, names, only_route
from xds_server.model import Endpoint, Health, Inventory, Service
from xds_server.model.config import Config
from xds_server.model.subsets import STATIC_NAMESPACE
from xds_server.translate import subsets as subset_translation
from xds_server.translate import translate
from xds_server.translate.endpoints import clear_caches as clear_endpoint_caches

V1 = {"name": "v1", "tags": ["v1"]}
V2 = {"name": "v2", "tags": ["v2"]}


def instance(last: int, tag: str, priority: int = 0, health: Health = Health.HEALTHY) -> Endpoint:
    return Endpoint(
        f"10.0.0.{last}",
        80,
        priority=priority,
        health=health,
        metadata={STATIC_NAMESPACE: {"tags": [tag]}},
    )


INVENTORY = Inventory.of(
    {
        "api": Service(
            "api",
            (
                instance(1, "v1"),
                instance(2, "v1"),
                instance(3, "v2"),
                instance(4, "v1", priority=1),
                instance(5, "v2", priority=1, health=Health.DEGRADED),
                instance(7, "v2", health=Health.UNHEALTHY),  # never in a subset's assignment
            ),
        )
    }
)


def config(*rules: dict[str, Any], **policy: Any) -> Config:
    return config_of(
        listener(),
        doc("ServicePolicy", "api", subsets=[V1, V2], **policy),
        route(rules=list(rules)),
    )


def split(*pairs: tuple[str | None, int]) -> dict[str, Any]:
    return {
        "backends": [
            {"service": "api", "weight": weight, **({"subset": s} if s else {})}
            for s, weight in pairs
        ]
    }


def assignment_of(resources: Any, name: str) -> dict[str, Any]:
    (found,) = [as_dict(e) for e in resources.endpoints if e.cluster_name == name]
    return found


def hosts_by_priority(assignment: dict[str, Any]) -> list[tuple[int, str]]:
    return sorted(
        (locality.get("priority", 0), host["endpoint"]["address"]["socket_address"]["address"])
        for locality in assignment.get("endpoints", [])
        for host in locality["lb_endpoints"]
    )


def test_each_subset_is_its_own_eds_cluster_and_the_route_splits_between_them() -> None:
    resources = default_resources(config(split(("v1", 90), ("v2", 10))), INVENTORY)
    assert names(resources.clusters) == ["api", "api~v1", "api~v2"]
    clusters = {d["name"]: d for d in map(as_dict, resources.clusters)}
    assert clusters["api~v2"]["eds_cluster_config"]["service_name"] == "api~v2"
    assert sorted(names(resources.endpoints)) == ["api", "api~v1", "api~v2"]
    weighted = only_route(config(split(("v1", 90), ("v2", 10))), INVENTORY)["route"]
    assert weighted["weighted_clusters"]["clusters"] == [
        {"name": "api~v1", "weight": 90},
        {"name": "api~v2", "weight": 10},
    ]
    assert hosts_by_priority(assignment_of(resources, "api~v1")) == [
        (0, "10.0.0.1"),
        (0, "10.0.0.2"),
        (1, "10.0.0.4"),  # datacenter failover kept
    ]
    assert hosts_by_priority(assignment_of(resources, "api~v2")) == [
        (0, "10.0.0.3"),
        (1, "10.0.0.5"),
    ]


def test_one_backend_names_its_subset_cluster_and_no_subset_means_the_service() -> None:
    assert only_route(config(split(("v2", 1))), INVENTORY)["route"]["cluster"] == "api~v2"
    resources = default_resources(config(split((None, 1))), INVENTORY)
    assert names(resources.clusters) == ["api"]  # no subset reached, no subset cluster


def test_no_subset_goes_to_the_default_subset() -> None:
    cfg = config(split((None, 1)), default_subset="v1")
    assert only_route(cfg, INVENTORY)["route"]["cluster"] == "api~v1"
    assert "api~v1" in names(default_resources(cfg, INVENTORY).clusters)


def test_the_default_subset_follows_at_lower_priorities() -> None:
    resources = default_resources(config(split(("v2", 1)), default_subset="v1"), INVENTORY)
    assert hosts_by_priority(assignment_of(resources, "api~v2")) == [
        (0, "10.0.0.3"),
        (1, "10.0.0.5"),
        (2, "10.0.0.1"),  # then v1, its own datacenter order kept
        (2, "10.0.0.2"),
        (3, "10.0.0.4"),
    ]
    # The default subset itself has nothing to fall back to.
    default_only = default_resources(config(split((None, 1)), default_subset="v1"), INVENTORY)
    assert hosts_by_priority(assignment_of(default_only, "api~v1")) == [
        (0, "10.0.0.1"),
        (0, "10.0.0.2"),
        (1, "10.0.0.4"),
    ]


def test_an_empty_subset_with_a_default_is_all_fallback_from_priority_0() -> None:
    v3 = {"name": "v3", "tags": ["v3"]}
    cfg = config_of(
        listener(),
        doc("ServicePolicy", "api", subsets=[V1, v3], default_subset="v1"),
        route(rules=[{"backends": [{"service": "api", "subset": "v3"}]}]),
    )
    resources = default_resources(cfg, INVENTORY)
    assert hosts_by_priority(assignment_of(resources, "api~v3")) == [
        (0, "10.0.0.1"),
        (0, "10.0.0.2"),
        (1, "10.0.0.4"),
    ]
    no_default = config_of(
        listener(),
        doc("ServicePolicy", "api", subsets=[V1, v3]),
        route(rules=[{"backends": [{"service": "api", "subset": "v3"}]}]),
    )
    assert assignment_of(default_resources(no_default, INVENTORY), "api~v3") == {
        "cluster_name": "api~v3"
    }  # 503


def test_only_passing_leaves_the_degraded_instance_out() -> None:
    passing = {**V2, "only_passing": True}
    cfg = config_of(
        listener(),
        doc("ServicePolicy", "api", subsets=[V1, passing]),
        route(rules=[{"backends": [{"service": "api", "subset": "v2"}]}]),
    )
    resources = default_resources(cfg, INVENTORY)
    assert hosts_by_priority(assignment_of(resources, "api~v2")) == [(0, "10.0.0.3")]


def test_subset_clusters_carry_the_policy() -> None:
    cfg = config(
        split(("v1", 1), ("v2", 1)),
        connect_timeout="2s",
        load_balancing={"policy": "least_request", "slow_start_window": "30s", "aggression": 2},
    )
    clusters = {d["name"]: d for d in map(as_dict, default_resources(cfg, INVENTORY).clusters)}
    for name in ("api", "api~v1", "api~v2"):
        assert clusters[name]["connect_timeout"] == "2s"
        assert clusters[name]["lb_policy"] == "LEAST_REQUEST"
        slow = clusters[name]["least_request_lb_config"]["slow_start_config"]
        assert slow["slow_start_window"] == "30s"
        assert slow["aggression"]["default_value"] == 2


def test_slow_start_for_round_robin() -> None:
    cfg = config(split(("v1", 1)), load_balancing={"slow_start_window": "1.5s"})
    clusters = {d["name"]: d for d in map(as_dict, default_resources(cfg, INVENTORY).clusters)}
    slow = clusters["api~v1"]["round_robin_lb_config"]["slow_start_config"]
    assert slow == {"slow_start_window": "1.500s"}


def test_a_mirror_copies_to_the_whole_service() -> None:
    rule = {**split(("v2", 1)), "filters": {"mirror": {"service": "api"}}}
    action = only_route(config(rule, default_subset="v1"), INVENTORY)["route"]
    assert action["cluster"] == "api~v2"
    assert action["request_mirror_policies"][0]["cluster"] == "api"


def test_unusable_tls_fails_closed_for_subsets_too() -> None:
    cfg = config(split(("v1", 1)), tls_policy="missing")
    resources = default_resources(cfg, INVENTORY)
    assert assignment_of(resources, "api~v1") == {"cluster_name": "api~v1"}
    assert assignment_of(resources, "api") == {"cluster_name": "api"}


def test_caches_change_nothing_and_changes_are_seen() -> None:
    cfg = config(split(("v1", 3), ("v2", 1)), default_subset="v1")
    first = translate(INVENTORY, cfg).default
    subset_translation.clear_caches()
    clear_endpoint_caches()
    again = translate(INVENTORY, cfg).default
    assert [e.SerializeToString() for e in first.endpoints] == [
        e.SerializeToString() for e in again.endpoints
    ]
    api = INVENTORY.services["api"]
    moved = INVENTORY.with_service(Service("api", (*api.endpoints, instance(6, "v2"))))
    changed = translate(moved, cfg).default
    assert (0, "10.0.0.6") in hosts_by_priority(assignment_of(changed, "api~v2"))


def test_the_subset_strategies_know_the_mesh_strategies_services() -> None:
    from tests.integration import config_strategies, strategies_subsets

    assert set(config_strategies.MESH_SERVICES) == strategies_subsets.MESH_SERVICES
    assert strategies_subsets.SUBSET_SERVICE in config_strategies.SERVICES


def test_an_undefined_subset_fails_closed() -> None:
    """Validation refuses it; a store edited behind the API's back gets a 503, and a
    consistent snapshot (the route's cluster exists)."""
    cfg = config_of(listener(), route(rules=[{"backends": [{"service": "api", "subset": "v9"}]}]))
    resources = default_resources(cfg, INVENTORY)
    assert "api~v9" in names(resources.clusters)
    assert assignment_of(resources, "api~v9") == {"cluster_name": "api~v9"}
