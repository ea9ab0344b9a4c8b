from __future__ import annotations

from tests.unit.model_builders import config_of, inventory_of, listener, route
from tests.unit.translate_helpers import names
from xds_server.model import Inventory
from xds_server.translate import translate


def test_no_groups_everything_in_default() -> None:
    result = translate(inventory_of(web=1), config_of(listener(), route()))
    assert dict(result.groups) == {}
    assert names(result.default.listeners) == ["public"]
    assert result.for_group("anything") is result.default


def test_listeners_go_to_their_groups_only() -> None:
    config = config_of(
        listener("all", 80),
        listener("edge", 81, groups=["edge"]),
        listener("shared", 82, groups=["edge", "internal"]),
        route("for-all", listeners=["all"], rules=[{"backends": [{"service": "a"}]}]),
        route(
            "for-edge",
            listeners=["edge"],
            rules=[{"backends": [{"service": "b"}], "filters": {"mirror": {"service": "m"}}}],
        ),
        route("for-shared", listeners=["shared"], rules=[{"backends": [{"service": "c"}]}]),
    )
    result = translate(inventory_of(a=1, b=1, c=1, m=1, unused=1), config)
    assert sorted(result.groups) == ["edge", "internal"]

    assert names(result.default.listeners) == ["all"]
    assert names(result.default.routes) == ["all"]
    assert names(result.default.clusters) == ["a"]
    assert names(result.default.endpoints) == ["a"]

    edge = result.groups["edge"]
    assert names(edge.listeners) == ["all", "edge", "shared"]
    assert names(edge.routes) == ["all", "edge", "shared"]
    assert names(edge.clusters) == ["a", "b", "c", "m"]  # the mirror target too
    assert names(edge.endpoints) == ["a", "b", "c", "m"]

    internal = result.for_group("internal")
    assert names(internal.listeners) == ["all", "shared"]
    assert names(internal.clusters) == ["a", "c"]
    assert result.for_group("other") is result.default


def test_messages_lists_every_resource_in_push_order() -> None:
    resources = translate(Inventory(), config_of(listener(), route())).default
    kinds = [type(m).__name__ for m in resources.messages()]
    assert kinds == ["Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"]


def test_route_on_missing_listener_is_ignored() -> None:
    result = translate(Inventory(), config_of(listener(), route(listeners=["gone"])))
    assert result.default.clusters == ()
    assert names(result.default.routes) == ["public"]
