"""Consul JSON → Service, on the documented samples and the edge cases around them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from xds_server.model.inventory import Endpoint, Health, Service
from xds_server.sources.consul_mapping import (
    CONSUL_METADATA_NAMESPACE,
    MappingOptions,
    ServiceFilter,
    check_health,
    endpoints_from_health,
    entry_to_endpoint,
    merge_datacenters,
    select_services,
    service_from_health,
)

SAMPLES = Path("/work/shared/consul")


def _sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture
def health_sample() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = _sample("health-service.json")
    return data


def _entry(
    *,
    node: str = "n1",
    node_address: str = "10.0.0.1",
    address: str = "",
    port: int = 8080,
    service_id: str | None = None,
    checks: list[tuple[str, str]] | None = None,
    weights: dict[str, Any] | None = None,
    dc: str | None = "dc1",
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """A health entry of the documented shape; ``checks`` are ``(CheckID, Status)`` pairs."""
    entry: dict[str, Any] = {
        "Node": {"Node": node, "Address": node_address, "TaggedAddresses": {}, "Meta": {}},
        "Service": {
            "ID": service_id or f"web-{node}-{port}",
            "Service": "web",
            "Tags": tags,
            "Address": address,
            "Port": port,
            "Meta": {},
        },
        "Checks": [
            {
                "Node": node,
                "CheckID": cid,
                "Status": status,
                "ServiceID": "" if cid in ("serfHealth", "_node_maintenance") else "web",
                "ServiceName": "" if cid in ("serfHealth", "_node_maintenance") else "web",
            }
            for cid, status in (checks or [])
        ],
    }
    if dc is not None:
        entry["Node"]["Datacenter"] = dc
    if weights is not None:
        entry["Service"]["Weights"] = weights
    return entry


# --- the documented sample -----------------------------------------------------------------


def test_documented_health_sample(health_sample: list[dict[str, Any]]) -> None:
    service = service_from_health("redis", health_sample)
    assert service == Service(
        "redis",
        (
            Endpoint(
                address="10.1.10.12",
                port=8000,
                weight=10,
                health=Health.HEALTHY,
                region="dc1",
                priority=0,
                metadata={
                    "consul": {
                        "tags": ["primary"],
                        "meta": {"redis_version": "4.0"},
                        "node_meta": {"instance_type": "t2.medium"},
                        "node": "foobar",
                        "instance_id": "redis",
                        "datacenter": "dc1",
                    }
                },
            ),
        ),
    )
    assert CONSUL_METADATA_NAMESPACE == "consul"


def test_documented_sample_with_wan_tagged_address(health_sample: list[dict[str, Any]]) -> None:
    (endpoint,) = endpoints_from_health(health_sample, MappingOptions(prefer_tagged_address="wan"))
    assert (endpoint.address, endpoint.port) == ("198.18.1.2", 80)


def test_documented_sample_warning_uses_the_warning_weight(
    health_sample: list[dict[str, Any]],
) -> None:
    health_sample[0]["Checks"][0]["Status"] = "warning"
    (endpoint,) = endpoints_from_health(health_sample)
    assert endpoint.health is Health.DEGRADED
    assert endpoint.weight == 1
    health_sample[0]["Service"]["Weights"]["Warning"] = 4
    assert endpoints_from_health(health_sample)[0].weight == 4


def test_documented_catalog_sample_skips_consul_itself() -> None:
    selected = select_services(_sample("catalog-services.json"), ServiceFilter())
    assert selected == {"redis": (), "postgresql": ("primary", "secondary")}


# --- addresses ------------------------------------------------------------------------------


def test_empty_service_address_falls_back_to_the_node_address() -> None:
    endpoint = entry_to_endpoint(_entry(address="", node_address="10.9.9.9"))
    assert endpoint is not None and endpoint.address == "10.9.9.9"


def test_service_address_wins_over_the_node_address() -> None:
    endpoint = entry_to_endpoint(_entry(address="10.1.1.1", node_address="10.9.9.9"))
    assert endpoint is not None and endpoint.address == "10.1.1.1"


def test_tagged_address_falls_back_to_the_node_tagged_address_then_the_default() -> None:
    entry = _entry(address="10.1.1.1", port=8080)
    entry["Node"]["TaggedAddresses"] = {"lan": "10.0.0.1", "wan": "203.0.113.7"}
    wan = MappingOptions(prefer_tagged_address="wan")
    endpoint = entry_to_endpoint(entry, wan)
    assert endpoint is not None
    assert (endpoint.address, endpoint.port) == ("203.0.113.7", 8080)  # node: address only

    entry["Node"]["TaggedAddresses"] = {}
    endpoint = entry_to_endpoint(entry, wan)
    assert endpoint is not None
    assert (endpoint.address, endpoint.port) == ("10.1.1.1", 8080)  # no wan at all: default


def test_service_tagged_address_without_port_keeps_the_service_port() -> None:
    entry = _entry(port=8080)
    entry["Service"]["TaggedAddresses"] = {"wan": {"address": "198.51.100.1", "port": 0}}
    endpoint = entry_to_endpoint(entry, MappingOptions(prefer_tagged_address="wan"))
    assert endpoint is not None
    assert (endpoint.address, endpoint.port) == ("198.51.100.1", 8080)


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e["Service"].update(Port=0),
        lambda e: e["Service"].update(Port=None),
        lambda e: e["Service"].update(Port=70000),
        lambda e: (e["Service"].update(Address=""), e["Node"].update(Address="")),
    ],
    ids=["port-0", "port-null", "port-too-big", "no-address"],
)
def test_instances_without_usable_address_or_port_are_left_out(change: Any) -> None:
    good = _entry(node="a")
    bad = _entry(node="b")
    change(bad)
    assert entry_to_endpoint(bad) is None
    assert [e.metadata["consul"]["node"] for e in endpoints_from_health([good, bad])] == ["a"]


# --- health ----------------------------------------------------------------------------------


def _checks(*statuses: str) -> list[dict[str, str]]:
    return [{"CheckID": f"c{i}", "Status": s} for i, s in enumerate(statuses)]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((), Health.HEALTHY),
        (("passing",), Health.HEALTHY),
        (("passing", "passing"), Health.HEALTHY),
        (("warning",), Health.DEGRADED),
        (("passing", "warning"), Health.DEGRADED),
        (("warning", "passing"), Health.DEGRADED),
        (("critical",), Health.UNHEALTHY),
        (("passing", "critical"), Health.UNHEALTHY),
        (("critical", "warning"), Health.UNHEALTHY),
        (("warning", "critical", "passing"), Health.UNHEALTHY),
        (("maintenance",), Health.UNHEALTHY),
        (("something-new",), Health.UNHEALTHY),
    ],
)
def test_worst_check_wins(statuses: tuple[str, ...], expected: Health) -> None:
    assert check_health(_checks(*statuses)) is expected


def test_no_checks_at_all_is_healthy() -> None:
    assert check_health(None) is Health.HEALTHY
    entry = _entry(checks=[])
    entry["Checks"] = None
    endpoint = entry_to_endpoint(entry)
    assert endpoint is not None and endpoint.health is Health.HEALTHY


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ([("serfHealth", "passing"), ("service:web", "passing")], Health.HEALTHY),
        ([("serfHealth", "critical"), ("service:web", "passing")], Health.UNHEALTHY),
        ([("serfHealth", "warning"), ("service:web", "passing")], Health.DEGRADED),
        ([("serfHealth", "passing"), ("service:web", "warning")], Health.DEGRADED),
        ([("serfHealth", "passing"), ("_node_maintenance", "critical")], Health.UNHEALTHY),
        (
            [("serfHealth", "passing"), ("_service_maintenance:web-n1-8080", "passing")],
            Health.UNHEALTHY,
        ),
    ],
    ids=["all-pass", "node-down", "node-warn", "svc-warn", "node-maint", "svc-maint"],
)
def test_node_checks_count_as_much_as_service_checks(
    checks: list[tuple[str, str]], expected: Health
) -> None:
    endpoint = entry_to_endpoint(_entry(checks=checks))
    assert endpoint is not None and endpoint.health is expected


# --- weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "weights", "expected"),
    [
        ("passing", None, 1),
        ("passing", {"Passing": 10, "Warning": 2}, 10),
        ("warning", {"Passing": 10, "Warning": 2}, 2),
        ("warning", {"Passing": 10}, 1),
        ("critical", {"Passing": 10, "Warning": 2}, 1),
        ("passing", {"Passing": 0, "Warning": 0}, 1),
        ("passing", {"Passing": -5}, 1),
        ("passing", {"Passing": "10"}, 1),
        ("passing", {"Passing": None}, 1),
    ],
)
def test_weights(status: str, weights: dict[str, Any] | None, expected: int) -> None:
    endpoint = entry_to_endpoint(_entry(checks=[("service:web", status)], weights=weights))
    assert endpoint is not None and endpoint.weight == expected


# --- datacenters, sorting, metadata ------------------------------------------------------------


def test_region_is_the_datacenter_and_priority_comes_from_the_options() -> None:
    endpoint = entry_to_endpoint(_entry(dc="dc2"), MappingOptions(priority=1, datacenter="x"))
    assert endpoint is not None
    assert (endpoint.region, endpoint.zone, endpoint.priority) == ("dc2", "", 1)
    assert endpoint.metadata["consul"]["datacenter"] == "dc2"
    # An entry that does not name its datacenter takes the one it was read from.
    endpoint = entry_to_endpoint(_entry(dc=None), MappingOptions(datacenter="dc3"))
    assert endpoint is not None and endpoint.region == "dc3"


def _zoned(
    locality: Any = None, service_meta: Any = None, node_meta: Any = None
) -> tuple[str, str]:
    entry = _entry(dc="dc1")
    if locality is not None:
        entry["Service"]["Locality"] = locality
    if service_meta is not None:
        entry["Service"]["Meta"] = service_meta
    if node_meta is not None:
        entry["Node"]["Meta"] = node_meta
    endpoint = entry_to_endpoint(entry)
    assert endpoint is not None
    return endpoint.region, endpoint.zone


def test_zone_from_locality_then_service_meta_then_node_meta() -> None:
    everything = {"Region": "us-east-1", "Zone": "us-east-1a"}
    assert _zoned(everything, {"zone": "s"}, {"zone": "n"}) == ("us-east-1", "us-east-1a")
    assert _zoned({"Zone": "z"}, {"zone": "s"}) == ("dc1", "z")  # region falls back alone
    assert _zoned({"Region": "r"}, {"zone": "s"}, {"zone": "n"}) == ("r", "s")
    assert _zoned(None, {"zone": "s"}, {"zone": "n"}) == ("dc1", "s")
    assert _zoned(None, {"version": "v2"}, {"zone": "n"}) == ("dc1", "n")
    assert _zoned(None, None, None) == ("dc1", "")


@pytest.mark.parametrize(
    ("locality", "service_meta", "node_meta"),
    [
        (None, None, None),
        ({"Zone": None, "Region": 7}, {"zone": ""}, None),
        ("not-an-object", {"zone": 3}, {"zone": None}),
        ({}, {}, "not-an-object"),
    ],
)
def test_malformed_zone_fields_mean_no_zone(
    locality: Any, service_meta: Any, node_meta: Any
) -> None:
    assert _zoned(locality, service_meta, node_meta) == ("dc1", "")


def test_several_datacenters_merge_local_first() -> None:
    local = endpoints_from_health([_entry(node="a", dc="dc1")], MappingOptions(priority=0))
    remote = endpoints_from_health(
        [_entry(node="b", dc="dc2"), _entry(node="c", dc="dc2")], MappingOptions(priority=1)
    )
    merged = merge_datacenters("web", [remote, local])
    assert [(e.region, e.priority, e.metadata["consul"]["node"]) for e in merged.endpoints] == [
        ("dc1", 0, "a"),
        ("dc2", 1, "b"),
        ("dc2", 1, "c"),
    ]
    assert merged == merge_datacenters("web", [local, remote])


def test_zero_instances_is_an_empty_service() -> None:
    assert service_from_health("web", []) == Service("web", ())
    assert service_from_health("web", None) == Service("web", ())


def test_order_of_entries_does_not_matter() -> None:
    entries = [
        _entry(node="b", node_address="10.0.0.2"),
        _entry(node="a", node_address="10.0.0.1", port=9000),
        _entry(node="a", node_address="10.0.0.1", port=8000),
        # Two instances on one address and port (two nodes behind one NAT): node breaks the tie.
        _entry(node="d", node_address="10.0.0.5"),
        _entry(node="c", node_address="10.0.0.5"),
    ]
    forward = service_from_health("web", entries)
    backward = service_from_health("web", list(reversed(entries)))
    assert forward == backward
    assert [(e.address, e.port) for e in forward.endpoints] == [
        ("10.0.0.1", 8000),
        ("10.0.0.1", 9000),
        ("10.0.0.2", 8080),
        ("10.0.0.5", 8080),
        ("10.0.0.5", 8080),
    ]
    assert [e.metadata["consul"]["node"] for e in forward.endpoints][-2:] == ["c", "d"]


def test_metadata_carries_tags_meta_node_and_instance(health_sample: list[dict[str, Any]]) -> None:
    entry = copy.deepcopy(health_sample[0])
    entry["Service"]["Tags"] = None  # Consul prints null for no tags
    entry["Service"]["Meta"] = None
    entry["Node"]["Meta"] = None
    endpoint = entry_to_endpoint(entry)
    assert endpoint is not None
    assert endpoint.metadata == {
        "consul": {
            "tags": [],
            "meta": {},
            "node_meta": {},
            "node": "foobar",
            "instance_id": "redis",
            "datacenter": "dc1",
        }
    }
    json.dumps(dict(endpoint.metadata))  # JSON-compatible, as Envoy's Struct needs


def test_garbage_entries_do_not_raise() -> None:
    entries: list[Any] = [None, "x", {}, {"Node": None, "Service": None, "Checks": None}]
    assert endpoints_from_health(entries) == ()


# --- filters -----------------------------------------------------------------------------------

CATALOG = {
    "consul": [],
    "web": ["http", "public"],
    "web-admin": ["http", "internal"],
    "api": ["grpc", "public"],
    "db": None,
}


@pytest.mark.parametrize(
    ("service_filter", "expected"),
    [
        (ServiceFilter(), {"web", "web-admin", "api", "db"}),
        (ServiceFilter(include=("web*",)), {"web", "web-admin"}),
        (ServiceFilter(include=("web", "api")), {"web", "api"}),
        (ServiceFilter(exclude=("*-admin",)), {"web", "api", "db"}),
        (ServiceFilter(include=("web*",), exclude=("*-admin",)), {"web"}),
        (ServiceFilter(include_tags=("public",)), {"web", "api"}),
        (ServiceFilter(exclude_tags=("internal",)), {"web", "api", "db"}),
        (ServiceFilter(include_tags=("http",), exclude_tags=("internal",)), {"web"}),
        (ServiceFilter(include=("consul",)), set()),
    ],
)
def test_filters(service_filter: ServiceFilter, expected: set[str]) -> None:
    assert set(select_services(CATALOG, service_filter)) == expected


def test_selected_services_keep_their_tags() -> None:
    assert select_services(CATALOG, ServiceFilter(include=("web", "db"))) == {
        "web": ("http", "public"),
        "db": (),
    }


def test_glob_is_case_sensitive_like_consul_names() -> None:
    assert not ServiceFilter(include=("Web",)).accepts("web")
