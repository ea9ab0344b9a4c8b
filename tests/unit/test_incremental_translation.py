"""Incremental translation and snapshot builds equal a translation and build from nothing.

``translate`` starts from its last translation with the same config and re-makes only the
endpoints of the services that changed; ``Snapshot.build`` given per-type tuples reuses what
``previous`` has of the very same messages. For random sequences of inventory changes
(services added, removed, their endpoints changed) and config changes (routes, service
policies with subsets, a listener for a named group), every step's snapshots, built as the
pipeline builds them, must equal byte for byte, version for version, the snapshots of a
fresh translation (every cache cleared) built without a previous one.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xds_server.translate
from tests.unit.inventory_strategies import apply_service_step, endpoint, endpoint_sets
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import CLUSTER, ENDPOINT
from xds_server.model import Config, Inventory, Service
from xds_server.model.config_parser import ConfigParser
from xds_server.pipeline.snapshots import SnapshotPipeline, by_type
from xds_server.translate import Translation, translate
from xds_server.translate import translation as translation_module

SERVICES = ("a", "b", "c", "d")
SUBSETS = ("v1", "v2")


def _clear_every_cache() -> None:
    """Every memo of every translate module (lru caches, identity memos, group memos)."""
    for info in pkgutil.walk_packages(xds_server.translate.__path__, "xds_server.translate."):
        module = importlib.import_module(info.name)
        for name, member in inspect.getmembers(module):
            if name in ("clear_caches", "clear_cache", "cache_clear") and inspect.isfunction(
                member
            ):
                member()
            elif not inspect.isclass(member) and callable(getattr(member, "cache_clear", None)):
                member.cache_clear()


@contextmanager
def _fresh() -> Iterator[None]:
    """Translate from nothing, leaving the incremental side's last translation in place."""
    saved = translation_module._MEMO
    translation_module._MEMO = translation_module._Memo()
    try:
        _clear_every_cache()
        yield
    finally:
        translation_module._MEMO = saved


# -- the world and its changes -----------------------------------------------------------------


@dataclasses.dataclass
class World:
    services: dict[str, Service]
    routes: dict[str, list[tuple[str, str | None]]]  # route name -> (service, subset) backends
    policies: dict[str, tuple[str, bool]]  # service -> (lb policy, with subsets)
    grouped: bool  # a listener for group "inner" carries route "r1" too

    def documents(self) -> list[tuple[str, str, dict[str, Any], int]]:
        docs: list[tuple[str, str, dict[str, Any]]] = [("Listener", "public", {"port": 8080})]
        if self.grouped:
            docs.append(("Listener", "inner", {"port": 9000, "groups": ["inner"]}))
        for name, (policy, with_subsets) in sorted(self.policies.items()):
            spec: dict[str, Any] = {"load_balancing": {"policy": policy}}
            if with_subsets:
                spec["subsets"] = [{"name": s, "metadata": {"version": s}} for s in SUBSETS]
            docs.append(("ServicePolicy", name, spec))
        for name, backends in sorted(self.routes.items()):
            listeners = ["public", "inner"] if self.grouped and name == "r1" else ["public"]
            rules = [
                {
                    "matches": [{"path": {"prefix": f"/{name}/{index}"}}],
                    "backends": [
                        {"service": s} if subset is None else {"service": s, "subset": subset}
                    ],
                }
                for index, (s, subset) in enumerate(backends)
            ]
            docs.append(("Route", name, {"listeners": listeners, "rules": rules}))
        return [(kind, name, spec, n) for n, (kind, name, spec) in enumerate(docs, start=1)]

    def inventory(self) -> Inventory:
        return Inventory.of(self.services)


endpoints = endpoint_sets(SUBSETS, max_size=4)
backend = st.tuples(st.sampled_from(SERVICES), st.sampled_from((None, *SUBSETS)))

Step = tuple[str, Any]
steps: st.SearchStrategy[Step] = st.one_of(
    st.tuples(st.just("service"), st.tuples(st.sampled_from(SERVICES), endpoints)),
    st.tuples(st.just("remove service"), st.sampled_from(SERVICES)),
    st.tuples(st.just("same service rebuilt"), st.sampled_from(SERVICES)),
    st.tuples(
        st.just("route"),
        st.tuples(st.sampled_from(("r1", "r2")), st.lists(backend, min_size=1, max_size=3)),
    ),
    st.tuples(st.just("remove route"), st.sampled_from(("r1", "r2"))),
    st.tuples(
        st.just("policy"),
        st.tuples(
            st.sampled_from(SERVICES), st.sampled_from(("round_robin", "ring_hash")), st.booleans()
        ),
    ),
    st.tuples(st.just("remove policy"), st.sampled_from(SERVICES)),
    st.tuples(st.just("grouped"), st.booleans()),
)


def _apply(world: World, step: Step) -> None:
    kind, value = step
    if apply_service_step(world.services, kind, value):
        return
    if kind == "route":
        name, backends = value
        world.routes[name] = backends
    elif kind == "remove route":
        world.routes.pop(value, None)
    elif kind == "policy":
        name, policy, with_subsets = value
        world.policies[name] = (policy, with_subsets)
    elif kind == "remove policy":
        world.policies.pop(value, None)
    elif kind == "grouped":
        world.grouped = value


# -- what is compared ---------------------------------------------------------------------------


def _wire(snapshot: Snapshot) -> dict[str, Any]:
    """Everything a stream sends of a snapshot: per type, in order, each resource's name,
    version and encodings, and the type's version."""
    return {
        type_url: (
            snapshot.version(type_url),
            [
                (r.name, r.version, r.body, r.sotw_field, r.delta_field)
                for r in snapshot.of_type(type_url).values()
            ],
        )
        for type_url in snapshot.type_urls()
    }


def _fresh_snapshots(inventory: Inventory, config: Config) -> dict[str, dict[str, Any]]:
    with _fresh():
        fresh: Translation = translate(inventory, config)
    found = {"*": fresh.default, "grpc": fresh.grpc, **fresh.groups}
    result = {}
    for key, resources in found.items():
        flat = _wire(Snapshot.build(resources.messages()))
        assert _wire(Snapshot.build(by_type(resources))) == flat  # per type = flat
        result[key] = flat
    return result


def _pipeline_snapshots(pipeline: SnapshotPipeline) -> dict[str, dict[str, Any]]:
    state = pipeline.cache.state
    found = {"*": state.default, "grpc": state.grpc, **state.groups}
    return {key: _wire(snapshot) for key, snapshot in found.items()}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(steps, min_size=1, max_size=12))
def test_incremental_translation_equals_a_translation_from_nothing(history: list[Step]) -> None:
    world = World(
        services={
            "a": Service("a", (endpoint(0, True, "v1", 8000),)),
            "b": Service("b", (endpoint(1, True, "v2", 8000), endpoint(2, False, "v1", 8001))),
        },
        routes={"r1": [("a", None), ("b", "v2")]},
        policies={"b": ("round_robin", True)},
        grouped=False,
    )
    parser = ConfigParser()  # as the store does: unchanged documents stay the same objects
    translation_module.clear_caches()
    pipeline = SnapshotPipeline(
        SnapshotCache(), translate, world.inventory(), parser.config_of(world.documents())
    )
    pipeline.build_now()
    for step in history:
        _apply(world, step)
        if step[0] in ("service", "remove service", "same service rebuilt"):
            pipeline.set_inventory(world.inventory())
        else:
            pipeline.set_config(parser.config_of(world.documents()))
        result = pipeline.build_now()
        assert result is not None and result.error is None, result
        assert _pipeline_snapshots(pipeline) == _fresh_snapshots(
            pipeline.inventory, pipeline.config
        ), step


def test_a_one_service_change_remakes_that_service_only() -> None:
    """The other services' messages are handed over as the very same objects, and a group
    none of whose endpoints read the service is the very same ``ProxyResources``."""
    parser = ConfigParser()
    config = parser.config_of(
        [
            ("Listener", "public", {"port": 8080}, 1),
            ("Listener", "inner", {"port": 9000, "groups": ["inner"]}, 2),
            ("Route", "ab", {"listeners": ["public"], "rules": _rules("a", "b")}, 3),
            ("Route", "c", {"listeners": ["inner"], "rules": _rules("c")}, 4),
        ]
    )
    services = {name: Service(name, (endpoint(0, True, "v1", 8000),)) for name in "abc"}
    translation_module.clear_caches()
    before = translate(Inventory.of(services), config)
    changed = {**services, "c": Service("c", (endpoint(1, True, "v1", 8000),))}
    after = translate(Inventory.of(changed), config)
    assert after.default is before.default  # reads a and b only
    old, new = before.groups["inner"], after.groups["inner"]  # a, b and c
    assert [getattr(m, "cluster_name") for m in new.endpoints]  # noqa: B009 == ["a", "b", "c"]
    assert [n is o for n, o in zip(new.endpoints, old.endpoints, strict=True)] == [
        True,
        True,
        False,
    ]
    for kind in ("clusters", "listeners", "routes", "secrets"):
        assert getattr(new, kind) is getattr(old, kind)
    assert after.grpc.listeners is before.grpc.listeners  # the same gRPC targets: kept
    changed_grpc = [
        n is o for n, o in zip(after.grpc.endpoints, before.grpc.endpoints, strict=True)
    ]
    assert changed_grpc == [True, True, False]


def test_a_build_from_the_same_tuples_reuses_previous_resources_whole() -> None:
    parser = ConfigParser()
    config = parser.config_of(
        [
            ("Listener", "public", {"port": 8080}, 1),
            ("Route", "ab", {"listeners": ["public"], "rules": _rules("a", "b")}, 2),
        ]
    )
    services = {name: Service(name, (endpoint(0, True, "v1", 8000),)) for name in "ab"}
    translation_module.clear_caches()
    first = translate(Inventory.of(services), config).default
    previous = Snapshot.build(by_type(first))
    changed = {**services, "b": Service("b", (endpoint(2, True, "v1", 8000),))}
    second = translate(Inventory.of(changed), config).default
    snapshot = Snapshot.build(by_type(second), previous=previous)
    cds, eds = CLUSTER, ENDPOINT
    assert snapshot.of_type(cds) is previous.of_type(cds)  # the very same mapping
    assert snapshot.of_type(eds)["a"] is previous.of_type(eds)["a"]
    assert snapshot.of_type(eds)["b"] is not previous.of_type(eds)["b"]
    assert snapshot.changes is not None
    assert set(snapshot.changes) == {eds}
    assert snapshot.changes[eds].updated == {"b"} and not snapshot.changes[eds].removed
    assert _wire(snapshot) == _wire(Snapshot.build(second.messages()))


def test_a_mapping_with_a_message_under_another_type_is_built_flat() -> None:
    parser = ConfigParser()
    config = parser.config_of(
        [
            ("Listener", "public", {"port": 8080}, 1),
            ("Route", "a", {"listeners": ["public"], "rules": _rules("a")}, 2),
        ]
    )
    resources = translate(Inventory.of({}), config).default
    both = resources.clusters + resources.endpoints
    mixed = {"type.googleapis.com/x": both}
    assert _wire(Snapshot.build(mixed)) == _wire(Snapshot.build(both))
    assert len(Snapshot.build(mixed)) == 2


def _rules(*services: str) -> list[dict[str, Any]]:
    return [
        {"matches": [{"path": {"prefix": f"/{s}"}}], "backends": [{"service": s}]} for s in services
    ]
