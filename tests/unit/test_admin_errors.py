"""Every error is problem+json: unknown paths, methods, media types, bodies, the store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.unit.admin_harness import (
    YAML,
    Api,
    assert_problem,
    inventory,
    listener,
    new_store,
    reason_at,
    route,
    running_api,
)
from xds_server.admin.app import create_admin_app
from xds_server.admin.context import AdminContext
from xds_server.model.inventory import Inventory
from xds_server.store import MemoryStore


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(new_store("memory", tmp_path), max_body_bytes=4096) as running:
        await running.put("listeners/public", listener())
        yield running


async def test_unknown_paths_and_names(api: Api) -> None:
    assert_problem(await api.client.get("/v1/nothing"), 404)
    problem = assert_problem(await api.client.get("/v1/routes/missing"), 404)
    assert "missing" in problem["detail"]
    assert problem["instance"] == "/v1/routes/missing"


async def test_a_method_not_allowed_lists_the_allowed_ones(api: Api) -> None:
    response = await api.client.post("/v1/listeners/public", json=listener())
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, PUT, DELETE"
    assert_problem(await api.client.patch("/v1/apply", json=[]), 405)


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded"])
async def test_an_unsupported_media_type(api: Api, media: str) -> None:
    response = await api.client.put(
        "/v1/listeners/public", content=b"port=1", headers={"content-type": media}
    )
    problem = assert_problem(response, 415)
    assert "application/yaml" in problem["detail"]


async def test_curl_without_a_content_type_is_told_which_header_to_send(api: Api) -> None:
    """``curl -X PUT -d '{…}'`` sends application/x-www-form-urlencoded: still refused, but
    the detail says what to send instead."""
    response = await api.client.put(
        "/v1/listeners/public",
        content=b'{"spec": {"port": 8080}}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    problem = assert_problem(response, 415)
    assert "Content-Type: application/json" in problem["detail"]
    assert "Content-Type: application/yaml" in problem["detail"]
    assert problem["errors"][0]["field"] == "header.content-type"


async def test_json_and_yaml_media_types_with_parameters(api: Api) -> None:
    body = b'{"spec": {"port": 8080}}'
    for media in ("application/json; charset=utf-8", "application/merge+json", "text/yaml"):
        response = await api.client.put(
            "/v1/listeners/public", content=body, headers={"content-type": media}
        )
        assert response.status_code == 200, (media, response.text)


async def test_malformed_json_names_the_line(api: Api) -> None:
    response = await api.client.put(
        "/v1/listeners/public",
        content=b'{\n  "spec": {\n    "port": 80,,\n}}',
        headers={"content-type": "application/json"},
    )
    problem = assert_problem(response, 400)
    assert problem["errors"][0]["line"] == 3
    assert "line 3" in problem["detail"]
    assert_problem(await api.client.post("/v1/apply", content=b"\xff\xfe\x00"), 400)


async def test_malformed_yaml_names_the_line(api: Api) -> None:
    text = "kind: Listener\nname: public\nspec:\n  port: [80\n"
    response = await api.client.put("/v1/listeners/public", content=text, headers=YAML)
    problem = assert_problem(response, 400)
    assert problem["errors"][0]["line"] >= 4
    assert "YAML" in problem["detail"]


async def test_a_body_over_the_limit(api: Api) -> None:
    big = [route(f"r{i}") for i in range(100)]
    declared = await api.client.post("/v1/apply", json=big)
    assert_problem(declared, 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b" " * 1000

    streamed = await api.client.post(
        "/v1/apply", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(streamed, 413)
    assert await api.revision() == 1


async def test_invalid_parameters_are_problems_too(api: Api) -> None:
    problem = assert_problem(await api.client.put("/v1/listeners/x?dry_run=maybe", json={}), 422)
    assert problem["type"].endswith(":invalid-request")
    assert reason_at(problem, "query.dry_run")


async def test_an_unavailable_store_is_a_503_without_the_reason(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(api.store, MemoryStore)
    api.store.set_unavailable("disk full at /var/secret/config.db")
    with caplog.at_level(logging.WARNING, logger="xds_server.admin"):
        responses = [
            await api.put("listeners/other", listener("other", 9000)),
            await api.client.delete("/v1/listeners/public"),
            await api.client.post("/v1/apply", json=[listener("other", 9000)]),
            await api.client.post("/v1/rollback", json={"revision": 0}),
        ]
    for response in responses:
        problem = assert_problem(response, 503)
        assert "secret" not in response.text
        assert problem["type"].endswith(":store-unavailable")
        assert response.headers["retry-after"]
    assert "disk full" in caplog.text
    assert (await api.client.get("/v1/listeners/public")).status_code == 200  # reads still work
    api.store.set_unavailable(None)
    assert (await api.put("listeners/other", listener("other", 9000))).status_code == 201


async def test_a_store_that_is_not_open_is_a_503() -> None:
    app = create_admin_app(AdminContext(store=MemoryStore(), inventory=inventory))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin"
    ) as client:
        assert_problem(await client.get("/v1/listeners"), 503)
        assert_problem(await client.put("/v1/listeners/a", json=listener("a")), 503)
        assert "x-config-revision" not in (await client.get("/v1/listeners")).headers


async def test_health_endpoints_remain(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).status_code == 200


async def test_readyz_reports_a_failing_check() -> None:
    app = create_admin_app(
        AdminContext(
            store=MemoryStore(),
            inventory=Inventory,
            readiness={"store": lambda: (False, "closed")},
        )
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin"
    ) as client:
        answer = await client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"]["store"] == {"ok": False, "detail": "closed"}
