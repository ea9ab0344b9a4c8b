"""The proxyless gRPC translation memoised per service (``translate.proxyless.units``).

Each registry service's listeners, route configuration and the clusters it sends to are
kept with the inputs they were made of (its ``Service``, the routes naming it, its and its
backends' ``ServicePolicy``, their retry policies) and reused while those are the very same
objects. For random sequences of inventory and config changes (as the store hands them
over: unchanged documents stay the same objects), the memoised resources must equal, byte
for byte and in order, those of a translation from nothing; and a change to one service
must leave the others' resources the very same objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.inventory_strategies import apply_service_step, endpoint, endpoint_sets
from xds_server.model import Config, Endpoint, Inventory, Service
from xds_server.model.config import RawDocument
from xds_server.model.config_parser import ConfigParser
from xds_server.translate import translate
from xds_server.translate import translation as translation_module
from xds_server.translate.output import ProxyResources
from xds_server.translate.proxyless import clusters, grpc_resources, resources, routes, units

SERVICES = ("a", "b", "c", "d")
SUBSETS = ("v1", "v2")


@contextmanager
def _fresh() -> Iterator[None]:
    """Translate from nothing, leaving the memoised side's state as it was."""
    saved = units._LAST, resources._LAST, translation_module._MEMO
    translation_module._MEMO = translation_module._Memo()
    for module in (units, resources, clusters, routes):
        module.clear_caches()
    try:
        yield
    finally:
        units._LAST, resources._LAST, translation_module._MEMO = saved


def _wire(found: ProxyResources) -> list[tuple[str, bytes]]:
    return [
        (type(m).DESCRIPTOR.full_name, m.SerializeToString(deterministic=True))
        for m in found.messages()
    ]


# -- the world and its changes -----------------------------------------------------------------


@dataclasses.dataclass
class World:
    services: dict[str, Service]
    #: route name -> (hostnames, backends (service, subset), retry policy name)
    routes: dict[str, tuple[tuple[str, ...], list[tuple[str, str | None]], str | None]]
    #: service -> (lb policy, with subsets, default subset)
    policies: dict[str, tuple[str, bool, bool]]
    #: retry policy name -> number of retries
    retries: dict[str, int]

    def documents(self) -> list[tuple[str, str, dict[str, Any], int]]:
        docs: list[tuple[str, str, dict[str, Any]]] = [("Listener", "public", {"port": 8080})]
        for name, count in sorted(self.retries.items()):
            docs.append(("RetryPolicy", name, {"retry_on": ["unavailable"], "num_retries": count}))
        for name, (policy, with_subsets, default) in sorted(self.policies.items()):
            balancing: dict[str, Any] = {"policy": policy}
            if policy == "ring_hash":
                balancing["hash_policies"] = [{"header": "x-user"}]
            spec: dict[str, Any] = {"load_balancing": balancing}
            if with_subsets:
                spec["subsets"] = [{"name": s, "metadata": {"version": s}} for s in SUBSETS]
                if default:
                    spec["default_subset"] = "v1"
            docs.append(("ServicePolicy", name, spec))
        for name, (hostnames, backends, retry) in sorted(self.routes.items()):
            rules: list[dict[str, Any]] = []
            for index, (service, subset) in enumerate(backends):
                target: dict[str, Any] = {"service": service}
                if subset is not None and self.policies.get(service, ("", False, False))[1]:
                    target["subset"] = subset
                rule: dict[str, Any] = {
                    "matches": [{"path": {"prefix": f"/{name}.S{index}"}}],
                    "backends": [target],
                }
                if retry is not None and retry in self.retries:
                    rule["retry"] = {"policy": retry}
                rules.append(rule)
            spec = {"listeners": ["public"], "hostnames": list(hostnames), "rules": rules}
            docs.append(("Route", name, spec))
        return [(kind, name, spec, n) for n, (kind, name, spec) in enumerate(docs, start=1)]

    def inventory(self) -> Inventory:
        return Inventory.of(self.services)


endpoints = endpoint_sets(SUBSETS, max_size=3)
hostname = st.sampled_from((*SERVICES, "elsewhere.example.com"))
backend = st.tuples(st.sampled_from((*SERVICES, "gone")), st.sampled_from((None, *SUBSETS)))

Step = tuple[str, Any]
steps: st.SearchStrategy[Step] = st.one_of(
    st.tuples(st.just("service"), st.tuples(st.sampled_from(SERVICES), endpoints)),
    st.tuples(st.just("remove service"), st.sampled_from(SERVICES)),
    st.tuples(st.just("same service rebuilt"), st.sampled_from(SERVICES)),
    st.tuples(
        st.just("route"),
        st.tuples(
            st.sampled_from(("r1", "r2", "r3")),
            st.lists(hostname, min_size=1, max_size=2, unique=True).map(tuple),
            st.lists(backend, min_size=1, max_size=2),
            st.sampled_from((None, "retry-a", "retry-b")),
        ),
    ),
    st.tuples(st.just("remove route"), st.sampled_from(("r1", "r2", "r3"))),
    st.tuples(
        st.just("policy"),
        st.tuples(
            st.sampled_from(SERVICES),
            st.sampled_from(("round_robin", "ring_hash")),
            st.booleans(),
            st.booleans(),
        ),
    ),
    st.tuples(st.just("remove policy"), st.sampled_from(SERVICES)),
    st.tuples(
        st.just("retry"), st.tuples(st.sampled_from(("retry-a", "retry-b")), st.integers(0, 3))
    ),
    st.tuples(st.just("remove retry"), st.sampled_from(("retry-a", "retry-b"))),
)


def _apply(world: World, step: Step) -> None:
    kind, value = step
    if apply_service_step(world.services, kind, value):
        return
    if kind == "route":
        name, hostnames, backends, retry = value
        world.routes[name] = (hostnames, backends, retry)
    elif kind == "remove route":
        world.routes.pop(value, None)
    elif kind == "policy":
        name, policy, with_subsets, default = value
        world.policies[name] = (policy, with_subsets, default)
    elif kind == "remove policy":
        world.policies.pop(value, None)
    elif kind == "retry":
        name, count = value
        world.retries[name] = count
    elif kind == "remove retry":
        world.retries.pop(value, None)


def _start() -> World:
    return World(
        services={
            "a": Service("a", (endpoint(0, True, "v1", 8000),)),
            "b": Service("b", (endpoint(1, True, "v2", 8000), endpoint(2, False, "v1", 8001))),
            "c": Service("c"),
        },
        routes={"r1": (("a",), [("a", None), ("b", "v2")], "retry-a")},
        policies={"b": ("ring_hash", True, True)},
        retries={"retry-a": 2},
    )


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(steps, min_size=1, max_size=10))
def test_memoised_proxyless_resources_equal_a_translation_from_nothing(
    history: list[Step],
) -> None:
    world = _start()
    parser = ConfigParser()  # as the store does: unchanged documents stay the same objects
    for module in (units, resources):
        module.clear_caches()
    translation_module.clear_caches()
    config: Config = parser.config_of(world.documents())
    grpc_resources(world.inventory(), config)
    translate(world.inventory(), config)
    for step in history:
        _apply(world, step)
        inventory = world.inventory()
        config = parser.config_of(world.documents())
        memoised = grpc_resources(inventory, config)
        through_translate = translate(inventory, config).grpc
        with _fresh():
            fresh = grpc_resources(inventory, config)
        assert _wire(memoised) == _wire(fresh), step
        assert _wire(through_translate) == _wire(fresh), step


def _many(count: int) -> dict[str, Service]:
    return {
        f"s{i}": Service(f"s{i}", (Endpoint(f"10.1.0.{i + 1}", 9000 + i),)) for i in range(count)
    }


def test_an_unchanged_services_resources_are_the_very_same_objects() -> None:
    services = _many(6)
    documents: list[RawDocument] = [
        ("Listener", "public", {"port": 8080}, 1),
        (
            "Route",
            "to-s1",
            {
                "listeners": ["public"],
                "hostnames": ["s1"],
                "rules": [
                    {"matches": [{"path": {"prefix": "/x.S"}}], "backends": [{"service": "s2"}]}
                ],
            },
            2,
        ),
    ]
    parser = ConfigParser()
    config = parser.config_of(documents)
    first = grpc_resources(Inventory.of(services), config)
    # Another service changes: new instances on a new port (so its listeners change too).
    services["s4"] = Service("s4", (Endpoint("10.1.0.99", 7777),))
    second = grpc_resources(Inventory.of(services), config)
    # And a route naming s1 changes.
    documents[1] = (
        "Route",
        "to-s1",
        {
            "listeners": ["public"],
            "hostnames": ["s1"],
            "rules": [{"matches": [{"path": {"prefix": "/y.S"}}], "backends": [{"service": "s3"}]}],
        },
        2,
    )
    third = grpc_resources(Inventory.of(services), parser.config_of(documents))

    def by_name(found: ProxyResources) -> dict[tuple[str, str], Any]:
        return {_key(m): m for m in found.messages()}

    before, after, last = by_name(first), by_name(second), by_name(third)
    assert after.keys() == before.keys() - {_listener("s4:9004")} | {_listener("s4:7777")}
    for key, message in before.items():
        if key[1].startswith("s4"):
            continue
        assert after[key] is message, key  # the very same object, not an equal one
    # The route change rebuilt s1's route configuration only; every listener is kept.
    changed = {key for key in last if last[key] is not after.get(key)}
    assert changed == {("envoy.config.route.v3.RouteConfiguration", "s1")}
    assert (
        last[("envoy.config.route.v3.RouteConfiguration", "s1")]
        != after[("envoy.config.route.v3.RouteConfiguration", "s1")]
    )
    # Nothing changed: the very same resources again (the skeleton itself is reused).
    again = grpc_resources(Inventory.of(services), parser.config_of(documents))
    assert again.listeners is third.listeners and again.clusters is third.clusters


def _key(message: Any) -> tuple[str, str]:
    """A resource's type and name (an assignment's name is its ``cluster_name``)."""
    name = message.cluster_name if hasattr(message, "cluster_name") else message.name
    return (type(message).DESCRIPTOR.full_name, str(name))


def _listener(name: str) -> tuple[str, str]:
    return ("envoy.config.listener.v3.Listener", name)
