from __future__ import annotations

from tests.unit.model_builders import config_of, listener, route
from tests.unit.translate_helpers import as_dict, default_resources
from xds_server.model import Endpoint, Health, Inventory, Service
from xds_server.translate.endpoints import empty_load_assignment, load_assignment


def test_endpoints_grouped_by_priority_region_zone_and_sorted() -> None:
    service = Service(
        "web",
        (
            Endpoint("10.0.0.9", 80, zone="b", region="eu"),
            Endpoint("10.0.0.2", 80, priority=1, region="us", zone="a"),
            Endpoint("10.0.0.3", 81, zone="a", region="eu"),
            Endpoint("10.0.0.1", 80, zone="a", region="eu"),
        ),
    )
    assignment = as_dict(load_assignment(service))
    assert assignment["cluster_name"] == "web"
    localities = [
        (
            group.get("priority", 0),
            group["locality"],
            [e["endpoint"]["address"]["socket_address"]["address"] for e in group["lb_endpoints"]],
        )
        for group in assignment["endpoints"]
    ]
    assert localities == [
        (0, {"region": "eu", "zone": "a"}, ["10.0.0.1", "10.0.0.3"]),
        (0, {"region": "eu", "zone": "b"}, ["10.0.0.9"]),
        (1, {"region": "us", "zone": "a"}, ["10.0.0.2"]),
    ]


def test_endpoint_fields() -> None:
    service = Service(
        "web",
        (
            Endpoint("10.0.0.1", 8081),
            Endpoint(
                "10.0.0.2",
                8082,
                weight=3,
                health=Health.DEGRADED,
                metadata={"consul": {"tags": ["v2"]}, "version": "v2"},
            ),
            Endpoint("10.0.0.3", 8083, health=Health.UNHEALTHY, weight=0),
        ),
    )
    endpoints = as_dict(load_assignment(service))["endpoints"][0]["lb_endpoints"]
    first, second, third = endpoints
    assert first == {
        "endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 8081}}},
        "health_status": "HEALTHY",
        "load_balancing_weight": 1,
    }
    assert second["health_status"] == "DEGRADED"
    assert second["load_balancing_weight"] == 3
    assert second["metadata"] == {
        "filter_metadata": {"consul": {"tags": ["v2"]}, "envoy.lb": {"version": "v2"}}
    }
    # Envoy requires weights >= 1.
    assert third["health_status"] == "UNHEALTHY" and third["load_balancing_weight"] == 1


def test_unusable_addresses_are_left_out() -> None:
    service = Service(
        "web",
        (Endpoint("web.internal", 80), Endpoint("10.0.0.1", 0), Endpoint("::1", 80)),
    )
    groups = as_dict(load_assignment(service))["endpoints"]
    (group,) = groups
    assert [
        e["endpoint"]["address"]["socket_address"]["address"] for e in group["lb_endpoints"]
    ] == ["::1"]


def test_priority_is_clamped_to_envoys_limit() -> None:
    groups = as_dict(load_assignment(Service("web", (Endpoint("10.0.0.1", 80, priority=500),))))
    assert groups["endpoints"][0]["priority"] == 128


def test_referenced_service_without_instances_gets_an_empty_assignment() -> None:
    resources = default_resources(config_of(listener(), route()), Inventory())
    (assignment,) = resources.endpoints
    assert as_dict(assignment) == {"cluster_name": "web"}
    assert assignment == empty_load_assignment("web")


def test_unreferenced_services_are_not_sent() -> None:
    inventory = Inventory.of(
        {name: Service(name, (Endpoint("10.0.0.1", 80),)) for name in ("web", "other")}
    )
    resources = default_resources(config_of(listener(), route()), inventory)
    assert [a.cluster_name for a in resources.endpoints] == ["web"]  # type: ignore[attr-defined]


def test_cached_per_service() -> None:
    service = Service("web", (Endpoint("10.0.0.1", 80),))
    assert load_assignment(service) is load_assignment(Service("web", (Endpoint("10.0.0.1", 80),)))
