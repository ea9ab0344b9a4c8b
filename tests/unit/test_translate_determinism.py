from __future__ import annotations

from pathlib import Path

import yaml

from xds_server.model import Config, Endpoint, Inventory, Service
from xds_server.translate import Translation, clusters, endpoints, listeners, routes, translate

EXAMPLES = Path(__file__).resolve().parents[2] / "api" / "examples"


def example_documents() -> list[tuple[str, str, dict, int]]:  # type: ignore[type-arg]
    files = ("listener.yaml", "route.yaml", "retry-policy.yaml", "service-policy.yaml")
    raws = [yaml.safe_load((EXAMPLES / file).read_text()) for file in files]
    extra = [
        {"kind": "Listener", "name": "internal", "spec": {"port": 9000, "groups": ["inner"]}},
        {
            "kind": "Route",
            "name": "inner",
            "spec": {
                "listeners": ["internal", "public"],
                "rules": [{"backends": [{"service": "api"}, {"service": "web", "weight": 3}]}],
            },
        },
    ]
    return [(r["kind"], r["name"], r["spec"], i) for i, r in enumerate(raws + extra, start=1)]


def inventory() -> Inventory:
    return Inventory.of(
        {
            "api": Service(
                "api",
                (
                    Endpoint("10.0.0.2", 80, zone="b", metadata={"x": {"b": 1, "a": [1, 2]}}),
                    Endpoint("10.0.0.1", 80, zone="a", weight=5),
                ),
            ),
            "web": Service("web", (Endpoint("10.0.1.1", 8080),)),
        }
    )


def serialised(translation: Translation) -> list[bytes]:
    bundles = [translation.default, *(translation.groups[g] for g in sorted(translation.groups))]
    return [
        message.SerializeToString(deterministic=True)
        for bundle in bundles
        for message in bundle.messages()
    ]


def clear_caches() -> None:
    clusters.cluster.cache_clear()
    endpoints.clear_caches()
    listeners.listener.cache_clear()
    routes.clear_caches()
    routes._route_configuration.cache_clear()


def test_translating_twice_gives_identical_bytes() -> None:
    documents = example_documents()
    first = serialised(translate(inventory(), Config.from_documents(documents)))
    clear_caches()
    second = serialised(translate(inventory(), Config.from_documents(reversed(documents))))
    assert first == second
    assert len(first) > 10


def test_unchanged_resources_are_reused() -> None:
    config = Config.from_documents(example_documents())
    before = translate(inventory(), config)
    changed = inventory().with_service(Service("web", (Endpoint("10.0.1.2", 8080),)))
    after = translate(changed, config)
    assert before.default.clusters == after.default.clusters
    assert before.default.listeners[0] is after.default.listeners[0]
    assert before.default.routes[0] is after.default.routes[0]
    old = {m.cluster_name: m for m in before.default.endpoints}  # type: ignore[attr-defined]
    new = {m.cluster_name: m for m in after.default.endpoints}  # type: ignore[attr-defined]
    assert old["api"] is new["api"]  # unchanged service: the cached message
    assert old["web"] != new["web"]
