from __future__ import annotations

from tests.unit.model_builders import config_of, doc, inventory_of, listener, route
from xds_server.model import Endpoint, Inventory, Service, validate_config


def fields(problems: list) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return [(p.kind, p.name, p.field) for p in problems]


def test_clean_config() -> None:
    report = validate_config(config_of(listener(), route()), inventory_of(web=1))
    assert report.ok and report.errors == [] and report.warnings == []


def test_missing_listener_is_an_error() -> None:
    report = validate_config(
        config_of(listener(), route(listeners=["public", "internal"])), inventory_of(web=1)
    )
    assert fields(report.errors) == [("Route", "web", "spec.listeners[1]")]
    assert report.errors[0].reason == "no listener 'internal'"
    assert not report.ok


def test_missing_retry_policy_is_an_error() -> None:
    rules = [
        {"backends": [{"service": "web"}], "retry": {"policy": "default"}},
        {"backends": [{"service": "web"}], "retry": {"policy": "missing"}},
    ]
    config = config_of(listener(), doc("RetryPolicy", "default"), route(rules=rules))
    report = validate_config(config, inventory_of(web=1))
    assert fields(report.errors) == [("Route", "web", "spec.rules[1].retry.policy")]
    assert "no retry policy 'missing'" in report.errors[0].reason


def test_service_without_instances_is_a_warning() -> None:
    rules = [
        {
            "backends": [{"service": "web"}, {"service": "new"}],
            "filters": {"mirror": {"service": "shadow"}},
        }
    ]
    report = validate_config(
        config_of(listener(), route(rules=rules)), inventory_of(web=1, shadow=0)
    )
    assert report.ok
    assert fields(report.warnings) == [
        ("Route", "web", "spec.rules[0].backends[1].service"),
        ("Route", "web", "spec.rules[0].filters.mirror.service"),
    ]
    assert report.warnings[0].reason == (
        "service 'new' has no instances yet; Envoy answers 503 until one registers"
    )


def test_no_inventory_warnings_before_the_first_sync() -> None:
    report = validate_config(config_of(listener(), route()), Inventory(synced=False))
    assert report.warnings == []


def test_instances_without_ip_are_a_warning() -> None:
    inventory = Inventory.of({"web": Service("web", (Endpoint("web.internal", 80),))})
    report = validate_config(config_of(listener(), route()), inventory)
    assert "whose address is not an IP" in report.warnings[0].reason


def test_service_policy_for_unknown_service_is_a_warning() -> None:
    report = validate_config(config_of(doc("ServicePolicy", "ghost")), inventory_of())
    assert fields(report.warnings) == [("ServicePolicy", "ghost", "name")]


def test_overlapping_listeners_in_a_group_are_an_error() -> None:
    config = config_of(
        listener("first", 80),
        listener("same", 80),
        listener("other-port", 81),
        listener("specific", 80, address="127.0.0.1"),
        listener("ipv6", 80, address="::"),
    )
    report = validate_config(config, inventory_of())
    assert fields(report.errors) == [
        ("Listener", "same", "spec.port"),
        ("Listener", "specific", "spec.port"),
        ("Listener", "specific", "spec.port"),
    ]
    assert report.errors[0].reason == (
        "listener 'first' already binds 0.0.0.0 port 80 for every proxy group"
    )


def test_same_port_in_different_groups_is_fine() -> None:
    config = config_of(
        listener("edge", 80, groups=["edge"]),
        listener("internal", 80, groups=["internal"]),
        listener("both", 80, groups=["internal", "x"]),
    )
    report = validate_config(config, inventory_of())
    assert fields(report.errors) == [("Listener", "both", "spec.port")]
    assert report.errors[0].reason.endswith("for proxy group(s) internal")


def test_same_hostname_and_match_twice_warns_on_the_younger_route() -> None:
    rules = [{"matches": [{"path": {"prefix": "/api/"}}], "backends": [{"service": "web"}]}]
    same = [{"matches": [{"path": {"prefix": "/api"}}], "backends": [{"service": "web"}]}]
    config = config_of(
        listener(),
        route("older", rules=rules, hostnames=["a.example.com"]),
        route("younger", rules=same, hostnames=["a.example.com", "b.example.com"]),
        route("elsewhere", rules=same, hostnames=["c.example.com"]),
    )
    report = validate_config(config, inventory_of(web=1))
    assert report.ok
    assert fields(report.warnings) == [("Route", "younger", "spec.rules[0].matches[0]")]
    assert "route 'older' rules[0] already has this match" in report.warnings[0].reason


def test_introduced_since_and_about() -> None:
    inventory = inventory_of(web=1)
    before = validate_config(config_of(listener(), route("a", listeners=["gone"])), inventory)
    after = validate_config(
        config_of(listener(), route("a", listeners=["gone"]), route("b", listeners=["nope"])),
        inventory,
    )
    new = after.introduced_since(before)
    assert fields(new.errors) == [("Route", "b", "spec.listeners[0]")]
    assert fields(after.about("Route", "a").errors) == [("Route", "a", "spec.listeners[0]")]


def test_duplicate_detection_handles_every_header_match_kind() -> None:
    headers = [{"name": "x", "exact": "1"}, {"name": "x", "present": True}]
    rules = [{"matches": [{"headers": headers}], "backends": [{"service": "web"}]}]
    config = config_of(listener(), route("a", rules=rules), route("b", rules=rules))
    report = validate_config(config, inventory_of(web=1))
    assert fields(report.warnings) == [("Route", "b", "spec.rules[0].matches[0]")]
