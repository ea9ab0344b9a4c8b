"""Validation before any write: 422 naming the field and the reason, warnings, referrers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.admin_harness import (
    Api,
    assert_problem,
    listener,
    new_store,
    reason_at,
    retry_policy,
    route,
    running_api,
)
from xds_server.model import Inventory


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(new_store(request.param, tmp_path)) as running:
        await running.put("listeners/public", listener())
        yield running


async def refused(api: Api, path: str, document: dict[str, Any]) -> dict[str, Any]:
    """The 422 problem of a PUT, after checking nothing was written."""
    before = await api.revision()
    problem = assert_problem(await api.put(path, document), 422)
    assert await api.revision() == before
    return problem


def rule(**fields: Any) -> dict[str, Any]:
    return {"backends": [{"service": "web"}], **fields}


async def test_a_regex_re2_rejects_is_refused_with_re2s_message(api: Api) -> None:
    doc = route(rules=[rule(matches=[{"path": {"regex": "/(?=x)"}}])])
    problem = await refused(api, "routes/web", doc)
    reason = reason_at(problem, "spec.rules[0].matches[0].path.regex")
    assert "invalid perl operator: (?=" in reason  # RE2's own words


async def test_weights_out_of_range(api: Api) -> None:
    doc = route(rules=[{"backends": [{"service": "web", "weight": 1_000_001}]}])
    problem = await refused(api, "routes/web", doc)
    assert "1000000" in reason_at(problem, "spec.rules[0].backends[0].weight")
    negative = route(rules=[{"backends": [{"service": "web", "weight": -1}]}])
    problem = await refused(api, "routes/web", negative)
    assert reason_at(problem, "spec.rules[0].backends[0].weight")


async def test_an_unknown_field_is_named(api: Api) -> None:
    doc = route()
    doc["spec"]["rules"][0]["retires"] = 3
    problem = await refused(api, "routes/web", doc)
    assert "Extra inputs" in reason_at(problem, "spec.rules[0].retires")
    top = {**listener(), "metadata": {}}
    problem = await refused(api, "listeners/public", top)
    assert reason_at(problem, "metadata")


async def test_every_problem_of_a_document_is_reported(api: Api) -> None:
    doc = route(rules=[rule(matches=[{"path": {"regex": "("}}]), rule(timeouts={"request": "x"})])
    problem = await refused(api, "routes/web", doc)
    fields = {error["field"] for error in problem["errors"]}
    assert {"spec.rules[0].matches[0].path.regex", "spec.rules[1].timeouts.request"} <= fields


async def test_a_route_naming_a_missing_listener_is_refused(api: Api) -> None:
    problem = await refused(api, "routes/web", route(listeners=("public", "nowhere")))
    assert problem["type"].endswith(":invalid-config")
    assert "nowhere" in reason_at(problem, "spec.listeners[1]")
    assert problem["errors"][0]["kind"] == "Route"
    assert problem["errors"][0]["name"] == "web"


async def test_a_route_naming_a_missing_retry_policy_is_refused(api: Api) -> None:
    doc = route(rules=[rule(retry={"policy": "missing"})])
    problem = await refused(api, "routes/web", doc)
    assert "missing" in reason_at(problem, "spec.rules[0].retry.policy")
    await api.put("retry-policies/missing", retry_policy("missing"))
    assert (await api.put("routes/web", doc)).status_code == 201


async def test_a_listener_on_a_taken_port_is_refused(api: Api) -> None:
    problem = await refused(api, "listeners/other", listener("other", 8080))
    assert "public" in reason_at(problem, "spec.port")


async def test_a_service_without_instances_is_accepted_with_a_warning(api: Api) -> None:
    response = await api.put("routes/web", route(services=("empty",)))
    assert response.status_code == 201
    warnings = response.json()["warnings"]
    assert [w["field"] for w in warnings] == ["spec.rules[0].backends[0].service"]
    assert "no instances" in warnings[0]["reason"]
    read = (await api.client.get("/v1/routes/web")).json()
    assert read["warnings"] == warnings
    listed = (await api.client.get("/v1/routes")).json()["items"]
    assert listed[0]["warnings"] == warnings
    unknown = await api.put("routes/other", route("other", services=("nobody",)))
    assert unknown.status_code == 201 and unknown.json()["warnings"]


async def test_no_inventory_warnings_before_the_first_sync(tmp_path: Path) -> None:
    async with running_api(
        new_store("memory", tmp_path), inventory_=Inventory(synced=False)
    ) as api:
        await api.put("listeners/public", listener())
        response = await api.put("routes/web", route(services=("empty",)))
        assert response.status_code == 201
        assert response.json()["warnings"] == []


@pytest.mark.parametrize("path", ["listeners/public", "retry-policies/default"])
async def test_deleting_what_a_route_uses_is_a_conflict_naming_the_referrers(
    api: Api, path: str
) -> None:
    await api.put("retry-policies/default", retry_policy())
    await api.put("routes/web", route(rules=[rule(retry={"policy": "default"})]))
    await api.put("routes/shop", route("shop"))
    before = await api.revision()
    response = await api.client.delete(f"/v1/{path}")
    problem = assert_problem(response, 409)
    referrers = {(e["kind"], e["name"]) for e in problem["errors"]}
    if path.startswith("listeners"):
        assert referrers == {("Route", "web"), ("Route", "shop")}
    else:
        assert referrers == {("Route", "web")}
        assert reason_at(problem, "spec.rules[0].retry.policy")
    assert "web" in problem["detail"]
    assert await api.revision() == before
    assert (await api.client.get(f"/v1/{path}")).status_code == 200


async def test_json_body_problems(api: Api) -> None:
    not_object = assert_problem(await api.client.put("/v1/listeners/x", json=[1]), 422)
    assert not_object["errors"][0]["field"] == "body"
    no_spec = assert_problem(await api.client.put("/v1/listeners/x", json={}), 422)
    assert reason_at(no_spec, "spec")
    nan = await api.client.put(
        "/v1/listeners/x",
        content=b'{"spec": {"port": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert_problem(nan, 400)


async def test_concurrent_writes_cannot_break_references(api: Api) -> None:
    """A route to "public" and the deletion of "public", at once: validation and commit are
    one step per write, so never both succeed."""
    for attempt in range(5):
        await api.put("listeners/public", listener())
        name = f"r{attempt}"
        created, deleted = await asyncio.gather(
            api.put(f"routes/{name}", route(name)),
            api.client.delete("/v1/listeners/public"),
        )
        assert sorted([created.status_code, deleted.status_code]) in ([201, 409], [204, 422])
        routes = (await api.client.get("/v1/routes")).json()["items"]
        listeners = (await api.client.get("/v1/listeners")).json()["items"]
        assert not (routes and not listeners)
        for item in routes:
            assert (await api.client.delete(f"/v1/routes/{item['name']}")).status_code == 204
