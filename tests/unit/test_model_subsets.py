"""ServicePolicy subsets and slow start: parsing, membership, cross-document checks, and the
API's 422 for each bad input (naming the field, nothing stored)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.admin_harness import Api, assert_problem, new_store, reason_at, running_api
from tests.unit.model_builders import config_of, doc, error_at, listener, problems, route
from xds_server.model import Endpoint, Health, Inventory, Service, validate_config
from xds_server.model.service_policy import ServicePolicySpec, Subset
from xds_server.model.subsets import (
    CONSUL_NAMESPACE,
    STATIC_NAMESPACE,
    in_subset,
    labels,
    members,
    subset_cluster_name,
)
from xds_server.sources.consul_mapping import CONSUL_METADATA_NAMESPACE, entry_to_endpoint
from xds_server.sources.static import STATIC_METADATA_NAMESPACE, RegistryError, parse_registry

V1 = {"name": "v1", "tags": ["v1"]}
V2 = {"name": "v2", "tags": ["v2"], "metadata": {"version": "2"}}


def policy(**spec: Any) -> dict[str, Any]:
    return doc("ServicePolicy", "api", **spec)


def backends(*items: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"backends": list(items)}]


def consul(tags: list[str], meta: dict[str, str], node_meta: dict[str, str]) -> Endpoint:
    endpoint = entry_to_endpoint(
        {
            "Node": {"Node": "n1", "Address": "10.0.0.1", "Meta": node_meta},
            "Service": {"ID": "api-1", "Service": "api", "Port": 80, "Tags": tags, "Meta": meta},
            "Checks": [],
        }
    )
    assert endpoint is not None
    return endpoint


# -- the documents ---------------------------------------------------------------------------


def test_a_policy_names_subsets_and_a_default() -> None:
    spec = ServicePolicySpec.model_validate(
        {"subsets": [V1, {**V2, "only_passing": True}], "default_subset": "v1"}
    )
    assert [s.name for s in spec.subsets] == ["v1", "v2"]
    assert spec.subset("v2") == Subset(
        name="v2", tags=("v2",), metadata={"version": "2"}, only_passing=True
    )
    assert spec.subset("v3") is None
    assert hash(spec) == hash(ServicePolicySpec.model_validate(spec.model_dump()))


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"subsets": [{"name": "v2"}]}, "spec.subsets[0]", "names no instances"),
        (
            {"subsets": [{"name": "v2", "tags": [], "metadata": {}, "node_metadata": {}}]},
            "spec.subsets[0]",
            "set tags, metadata or node_metadata",
        ),
        ({"subsets": [V1, {**V2, "name": "v1"}]}, "spec.subsets", "more than once: v1"),
        ({"subsets": [V1], "default_subset": "v2"}, "spec.default_subset", "(defined: v1)"),
        ({"default_subset": "v1"}, "spec.default_subset", "(defined: none)"),
        (
            {"load_balancing": {"policy": "ring_hash", "slow_start_window": "30s"}},
            "spec.load_balancing.slow_start_window",
            "not ring_hash",
        ),
        (
            {"load_balancing": {"policy": "maglev", "slow_start_window": "1s"}},
            "spec.load_balancing.slow_start_window",
            "round_robin or least_request",
        ),
        ({"load_balancing": {"aggression": 2}}, "spec.load_balancing.aggression", "needs"),
        (
            {"load_balancing": {"slow_start_window": "0s"}},
            "spec.load_balancing.slow_start_window",
            "",
        ),
    ],
)
def test_bad_subsets_and_slow_start_name_the_field(
    spec: dict[str, Any], field: str, words: str
) -> None:
    assert words in error_at(policy(**spec), field)


def test_slow_start_with_round_robin_and_least_request() -> None:
    for lb in ("round_robin", "least_request"):
        raw = policy(load_balancing={"policy": lb, "slow_start_window": "30s", "aggression": 1.5})
        assert problems(raw) == []


def test_backends_are_unique_by_service_and_subset() -> None:
    ok = route(rules=backends({"service": "api", "subset": "v1"}, {"service": "api"}))
    assert problems(ok) == []
    twice = route(
        rules=backends({"service": "api", "subset": "v1"}, {"service": "api", "subset": "v1"})
    )
    assert "api~v1" in error_at(twice, "spec.rules[0].backends")


# -- which instances belong ------------------------------------------------------------------


def test_the_namespaces_are_the_sources_own() -> None:
    assert CONSUL_NAMESPACE == CONSUL_METADATA_NAMESPACE
    assert STATIC_NAMESPACE == STATIC_METADATA_NAMESPACE
    assert subset_cluster_name("api", "v2") == "api~v2"


def test_consul_tags_service_meta_and_node_meta() -> None:
    endpoint = consul(["v2", "canary"], {"version": "2"}, {"rack": "r1"})
    found = labels(endpoint)
    assert found.tags == {"v2", "canary"}
    assert dict(found.metadata) == {"version": "2"}
    assert dict(found.node_metadata) == {"rack": "r1"}
    assert in_subset(Subset(name="a", tags=("v2",), metadata={"version": "2"}), endpoint)
    assert in_subset(Subset(name="a", node_metadata={"rack": "r1"}), endpoint)
    assert not in_subset(Subset(name="a", tags=("v2", "v3")), endpoint)  # every tag
    assert not in_subset(Subset(name="a", tags=("v2",), metadata={"version": "3"}), endpoint)
    assert not in_subset(Subset(name="a", node_metadata={"rack": "r2"}), endpoint)
    # Service.Meta and Node.Meta are not interchangeable.
    assert not in_subset(Subset(name="a", metadata={"rack": "r1"}), endpoint)


def test_static_tags_and_metadata() -> None:
    inventory = parse_registry(
        "services:\n  api:\n    endpoints:\n"
        "      - {address: 10.0.0.1, port: 80, tags: [v1], metadata: {version: 1}}\n"
        "      - {address: 10.0.0.2, port: 80, metadata: {version: v2, team: a}}\n"
    )
    one, two = inventory.services["api"].endpoints
    assert one.metadata == {"xds_server": {"version": 1, "tags": ["v1"]}}
    assert in_subset(Subset(name="a", tags=("v1",)), one)
    assert in_subset(Subset(name="a", metadata={"version": "1"}), one)  # as JSON text
    assert in_subset(Subset(name="a", metadata={"version": "v2", "team": "a"}), two)
    assert not in_subset(Subset(name="a", tags=("v1",)), two)
    assert not in_subset(Subset(name="a", node_metadata={"version": "v2"}), two)


def test_static_tags_and_a_tags_metadata_key_conflict() -> None:
    with pytest.raises(RegistryError, match="set one of the two"):
        parse_registry(
            "services:\n  api:\n    endpoints:\n"
            "      - {address: 10.0.0.1, port: 80, tags: [v1], metadata: {tags: x}}\n"
        )


def test_failing_instances_and_with_only_passing_degraded_ones_are_left_out() -> None:
    tagged = {STATIC_NAMESPACE: {"tags": ["v2"]}}
    endpoints = [
        Endpoint("10.0.0.1", 80, health=Health.HEALTHY, metadata=tagged),
        Endpoint("10.0.0.2", 80, health=Health.DEGRADED, metadata=tagged),
        Endpoint("10.0.0.3", 80, health=Health.UNHEALTHY, metadata=tagged),
        Endpoint("10.0.0.4", 80),
    ]
    loose = Subset(name="v2", tags=("v2",))
    strict = Subset(name="v2", tags=("v2",), only_passing=True)
    # Failing instances are never members (Envoy's panic mode would send to them).
    assert [e.address for e in members(loose, endpoints)] == ["10.0.0.1", "10.0.0.2"]
    assert [e.address for e in members(strict, endpoints)] == ["10.0.0.1"]


# -- across documents ------------------------------------------------------------------------


def api_inventory(*tag_lists: list[str]) -> Inventory:
    return Inventory.of(
        {
            "api": Service(
                "api",
                tuple(
                    Endpoint(f"10.0.0.{i + 1}", 80, metadata={STATIC_NAMESPACE: {"tags": tags}})
                    for i, tags in enumerate(tag_lists)
                ),
            )
        }
    )


def test_a_backend_naming_an_undefined_subset_is_an_error() -> None:
    config = config_of(
        listener(),
        policy(subsets=[V1]),
        route(rules=backends({"service": "api", "subset": "v2"})),
        route("other", rules=backends({"service": "web", "subset": "v1"})),
    )
    report = validate_config(config, api_inventory(["v1"]))
    assert [(p.name, p.field) for p in report.errors] == [
        ("other", "spec.rules[0].backends[0].subset"),
        ("web", "spec.rules[0].backends[0].subset"),
    ]
    assert "no subset 'v2' (its ServicePolicy defines: v1)" in report.errors[1].reason
    assert "defines: none" in report.errors[0].reason


def test_a_subset_reached_twice_through_the_default_is_an_error() -> None:
    config = config_of(
        listener(),
        policy(subsets=[V1, V2], default_subset="v1"),
        route(rules=backends({"service": "api"}, {"service": "api", "subset": "v1"})),
    )
    report = validate_config(config, api_inventory(["v1"], ["v2"]))
    assert [p.field for p in report.errors] == ["spec.rules[0].backends[1].subset"]
    assert "default_subset" in report.errors[0].reason


def test_a_subset_without_instances_is_a_warning_saying_503_or_fallback() -> None:
    v3 = {"name": "v3", "tags": ["v3"]}
    rules = backends({"service": "api", "subset": "v3"}, {"service": "api", "subset": "v1"})
    no_default = config_of(listener(), policy(subsets=[V1, v3]), route(rules=rules))
    report = validate_config(no_default, api_inventory(["v1"]))
    assert report.ok
    assert [p.field for p in report.warnings] == ["spec.rules[0].backends[0].subset"]
    assert "matches none of its 1 instance(s); Envoy answers 503" in report.warnings[0].reason
    with_default = config_of(
        listener(), policy(subsets=[V1, v3], default_subset="v1"), route(rules=rules)
    )
    (warning,) = validate_config(with_default, api_inventory(["v1"])).warnings
    assert "default subset 'v1'" in warning.reason
    assert validate_config(with_default, api_inventory(["v1"], ["v3"])).warnings == []


# -- through the API: 422 naming the field, nothing stored -----------------------------------


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(new_store("sqlite", tmp_path)) as running:
        assert (await running.put("listeners/public", listener())).status_code == 201
        assert (await running.put("service-policies/api", policy(subsets=[V1]))).status_code == 201
        yield running


async def refused(api: Api, path: str, document: dict[str, Any], field: str) -> str:
    before = await api.revision()
    problem = assert_problem(await api.put(path, document), 422)
    assert await api.revision() == before
    return reason_at(problem, field)


async def test_the_api_refuses_bad_subsets_naming_the_field(api: Api) -> None:
    bad_policies: list[tuple[dict[str, Any], str]] = [
        ({"subsets": [{"name": "v2"}]}, "spec.subsets[0]"),
        ({"subsets": [V1, {"name": "v1", "tags": ["x"]}]}, "spec.subsets"),
        ({"subsets": [V1], "default_subset": "v9"}, "spec.default_subset"),
        (
            {"load_balancing": {"policy": "ring_hash", "slow_start_window": "30s"}},
            "spec.load_balancing.slow_start_window",
        ),
    ]
    for spec, field in bad_policies:
        assert await refused(api, "service-policies/api", policy(**spec), field)
    unknown = route("api", rules=backends({"service": "api", "subset": "v2"}))
    reason = await refused(api, "routes/api", unknown, "spec.rules[0].backends[0].subset")
    assert "no subset 'v2'" in reason
    stored = (await api.client.get("/v1/service-policies/api")).json()
    assert [s["name"] for s in stored["spec"]["subsets"]] == ["v1"]  # the first PUT's
    assert stored["spec"].get("default_subset") is None
    assert (await api.client.get("/v1/routes/api")).status_code == 404
