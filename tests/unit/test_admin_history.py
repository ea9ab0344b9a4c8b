"""``GET /v1/history``, ``GET /v1/history/{revision}``, ``POST /v1/rollback``."""

from __future__ import annotations

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
from xds_server.store import Change


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(new_store(request.param, tmp_path)) as running:
        yield running


async def build_history(api: Api) -> None:
    """r1: listener; r2: route; r3: route replaced; r4: policy; r5: route deleted."""
    assert (await api.put("listeners/public", listener())).status_code == 201
    assert (await api.put("routes/web", route())).status_code == 201
    changed = route(hostnames=["web.example.com"])
    assert (await api.put("routes/web", changed)).status_code == 200
    assert (await api.put("retry-policies/default", retry_policy())).status_code == 201
    assert (await api.client.delete("/v1/routes/web")).status_code == 204


async def documents(api: Api) -> dict[tuple[str, str], Any]:
    found: dict[tuple[str, str], Any] = {}
    for path in ("listeners", "routes", "retry-policies", "service-policies"):
        for item in (await api.client.get(f"/v1/{path}")).json()["items"]:
            found[(item["kind"], item["name"])] = item["spec"]
    return found


async def test_history_entries(api: Api) -> None:
    await build_history(api)
    items = (await api.client.get("/v1/history")).json()["items"]
    assert [(e["revision"], e["kind"], e["name"], e["operation"]) for e in items] == [
        (5, "Route", "web", "delete"),
        (4, "RetryPolicy", "default", "create"),
        (3, "Route", "web", "update"),
        (2, "Route", "web", "create"),
        (1, "Listener", "public", "create"),
    ]
    update = items[2]
    assert update["before"] == route()["spec"]
    assert update["after"] == route(hostnames=["web.example.com"])["spec"]
    assert update["actor"] == "anonymous"
    assert update["time"].endswith("Z")
    assert update["note"] is None
    assert items[0]["after"] is None and items[3]["before"] is None


async def test_history_filters_and_paging(api: Api) -> None:
    await build_history(api)

    async def revisions(params: dict[str, Any]) -> tuple[list[int], int | None]:
        response = await api.client.get("/v1/history", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        return [e["revision"] for e in body["items"]], body["next_before_revision"]

    assert await revisions({"kind": "Route"}) == ([5, 3, 2], None)
    assert await revisions({"kind": "routes", "name": "web"}) == ([5, 3, 2], None)
    assert await revisions({"name": "public"}) == ([1], None)
    assert await revisions({"limit": 2}) == ([5, 4], 4)
    assert await revisions({"limit": 2, "before_revision": 4}) == ([3, 2], 2)
    assert await revisions({"limit": 2, "before_revision": 2}) == ([1], None)
    assert await revisions({"kind": "Route", "limit": 1, "before_revision": 3}) == ([2], None)
    assert_problem(await api.client.get("/v1/history?limit=0"), 422)


async def test_one_revision(api: Api) -> None:
    await api.client.post("/v1/apply", json=[listener(), route()])
    body = (await api.client.get("/v1/history/1")).json()
    assert body["revision"] == 1 and body["actor"] == "anonymous"
    assert sorted(c["kind"] for c in body["changes"]) == ["Listener", "Route"]
    assert_problem(await api.client.get("/v1/history/2"), 404)
    assert_problem(await api.client.get("/v1/history/0"), 422)


async def test_current_revision(api: Api) -> None:
    assert (await api.client.get("/v1/revision")).json() == {"revision": 0}
    await api.put("listeners/public", listener())
    response = await api.client.get("/v1/revision")
    assert response.json() == {"revision": 1}
    assert response.headers["x-config-revision"] == "1"


@pytest.mark.parametrize("target", [0, 1, 2, 3, 4, 5])
async def test_rollback_restores_exactly_the_chosen_revision(api: Api, target: int) -> None:
    await build_history(api)
    snapshots: dict[int, dict[tuple[str, str], Any]] = {}
    for revision in range(6):
        state = await api.store.state_at(revision)
        snapshots[revision] = {key: doc.spec for key, doc in state.documents.items()}

    response = await api.client.post("/v1/rollback", json={"revision": target})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is False and body["base_revision"] == 5
    assert await documents(api) == snapshots[target]
    if target == 5:
        assert body["revision"] == 5 and body["changes"] == []
    else:
        assert body["revision"] == 6
        entries = (await api.client.get("/v1/history/6")).json()["changes"]
        assert {e["note"] for e in entries} == {f"rollback to {target}"}


async def test_rollback_with_a_note(api: Api) -> None:
    await build_history(api)
    response = await api.client.post("/v1/rollback", json={"revision": 3, "note": "bad deploy"})
    assert {c["operation"] for c in response.json()["changes"]} == {"created", "deleted"}
    entries = (await api.client.get("/v1/history/6")).json()["changes"]
    assert {e["note"] for e in entries} == {"rollback to 3: bad deploy"}


async def test_rollback_request_problems(api: Api) -> None:
    await build_history(api)
    missing = assert_problem(await api.client.post("/v1/rollback", json={"revision": 99}), 422)
    assert "99" in reason_at(missing, "revision")
    negative = assert_problem(await api.client.post("/v1/rollback", json={"revision": -1}), 422)
    assert reason_at(negative, "revision")
    extra = assert_problem(await api.client.post("/v1/rollback", json={"revison": 1}), 422)
    assert {e["field"] for e in extra["errors"]} == {"revision", "revison"}
    assert_problem(await api.client.post("/v1/rollback", json=[1]), 422)
    assert await api.revision() == 5


async def test_a_rollback_is_validated_like_a_write(api: Api) -> None:
    # A document that today's model refuses (as if stored by another version), then removed.
    await api.put("listeners/public", listener())
    await api.store.commit([Change("Route", "old", {"listeners": ["public"], "x": 1})], "test")
    await api.store.commit([Change("Route", "old", None)], "test")
    problem = assert_problem(await api.client.post("/v1/rollback", json={"revision": 2}), 422)
    assert [(e["kind"], e["name"], e["field"]) for e in problem["errors"]] == [
        ("Route", "old", "spec.rules"),
        ("Route", "old", "spec.x"),
    ]
    assert await api.revision() == 3


async def test_a_stored_document_that_does_not_parse_blocks_nothing_else(api: Api) -> None:
    await api.put("listeners/public", listener())
    await api.store.commit([Change("Route", "old", {"listeners": ["public"]})], "test")
    shown = (await api.client.get("/v1/routes/old")).json()
    assert shown["warnings"][0]["field"] == "spec.rules"  # its errors are shown
    assert (await api.put("routes/web", route())).status_code == 201
    assert (await api.client.delete("/v1/routes/old")).status_code == 204
