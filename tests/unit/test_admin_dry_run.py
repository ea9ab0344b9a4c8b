"""``?dry_run=true`` on every write: validated, previewed, and nothing saved."""

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
    route,
    running_api,
)
from xds_server.model import Config


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(new_store(request.param, tmp_path)) as running:
        await running.client.post("/v1/apply", json=[listener(), route()])
        yield running


async def assert_nothing_saved(api: Api) -> None:
    assert await api.revision() == 1
    assert len((await api.client.get("/v1/history")).json()["items"]) == 2


async def test_put(api: Api) -> None:
    response = await api.put("routes/shop", route("shop"), params={"dry_run": "true"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True
    assert body["base_revision"] == 1 and body["revision"] == 2
    assert body["changes"] == [
        {
            "kind": "Route",
            "name": "shop",
            "operation": "created",
            "before": None,
            "after": route("shop")["spec"],
        }
    ]
    assert body["envoy"] == {"changed": ["Route/shop"]}
    assert "etag" not in response.headers
    await assert_nothing_saved(api)
    assert (await api.client.get("/v1/routes/shop")).status_code == 404
    before, after = api.previews[-1]
    assert "shop" not in before.routes and "shop" in after.routes


async def test_put_reports_warnings(api: Api) -> None:
    response = await api.put("routes/web", route(services=("empty",)), params={"dry_run": "true"})
    body = response.json()
    assert body["changes"][0]["operation"] == "updated"
    assert [(w["kind"], w["name"]) for w in body["warnings"]] == [("Route", "web")]
    await assert_nothing_saved(api)


async def test_an_invalid_put_is_still_refused(api: Api) -> None:
    response = await api.put(
        "routes/web", route(listeners=("nowhere",)), params={"dry_run": "true"}
    )
    assert_problem(response, 422)
    assert api.previews == []


async def test_delete(api: Api) -> None:
    response = await api.client.delete("/v1/routes/web", params={"dry_run": "true"})
    assert response.status_code == 200
    body = response.json()
    assert [(c["operation"], c["after"]) for c in body["changes"]] == [("deleted", None)]
    assert body["envoy"] == {"changed": ["Route/web"]}
    await assert_nothing_saved(api)
    assert_problem(await api.client.delete("/v1/listeners/public?dry_run=true"), 409)


async def test_apply(api: Api) -> None:
    response = await api.client.post(
        "/v1/apply?dry_run=true", json=[listener("other", 9000), route()]
    )
    body = response.json()
    assert body["dry_run"] is True
    assert [d["operation"] for d in body["documents"]] == ["created", "unchanged"]
    assert body["envoy"] == {"changed": ["Listener/other"]}
    await assert_nothing_saved(api)


async def test_rollback(api: Api) -> None:
    response = await api.client.post("/v1/rollback?dry_run=true", json={"revision": 0})
    body = response.json()
    assert body["dry_run"] is True and body["revision"] == 2
    assert {c["operation"] for c in body["changes"]} == {"deleted"}
    assert body["envoy"] == {"changed": ["Listener/public", "Route/web"]}
    await assert_nothing_saved(api)


async def test_a_dry_run_that_changes_nothing(api: Api) -> None:
    body = (await api.put("listeners/public", listener(), params={"dry_run": "true"})).json()
    assert body["changes"] == [] and body["revision"] == body["base_revision"] == 1
    assert body["envoy"] == {}
    assert api.previews == []


async def test_a_failing_preview_is_reported_not_raised(tmp_path: Path) -> None:
    def broken(before: Config, after: Config) -> dict[str, Any]:
        raise RuntimeError("translator bug")

    async with running_api(new_store("memory", tmp_path), preview_=broken) as api:
        response = await api.put("listeners/a", listener("a"), params={"dry_run": "true"})
        assert response.status_code == 200
        assert "translator bug" in response.json()["envoy"]["error"]
