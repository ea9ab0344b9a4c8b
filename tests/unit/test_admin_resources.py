"""CRUD of every resource kind: create, read, list, replace, delete, preconditions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.admin_harness import (
    EXAMPLE_PATHS,
    EXAMPLES,
    YAML,
    Api,
    assert_problem,
    example,
    listener,
    new_store,
    reason_at,
    retry_policy,
    route,
    running_api,
    service_policy,
)


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(new_store(request.param, tmp_path)) as running:
        yield running


async def put_examples(api: Api) -> None:
    for file in ("listener.yaml", "retry-policy.yaml", "route.yaml", "service-policy.yaml"):
        doc = example(file)
        response = await api.put(f"{EXAMPLE_PATHS[file]}/{doc['name']}", doc)
        assert response.status_code == 201, response.text


async def test_every_example_can_be_put_as_json_and_as_yaml(api: Api) -> None:
    await put_examples(api)
    assert await api.revision() == 4
    for file, path in EXAMPLE_PATHS.items():  # the YAML text itself, unchanged
        name = example(file)["name"]
        text = (EXAMPLES / file).read_text()
        response = await api.client.put(f"/v1/{path}/{name}", content=text, headers=YAML)
        assert response.status_code == 200, response.text
    assert await api.revision() == 4  # the same documents: nothing changed


# One document of each kind, and a changed version of it.
KINDS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("listeners", listener("edge", 9000), listener("edge", 9001)),
    ("retry-policies", retry_policy("fast"), retry_policy("fast", num_retries=5)),
    ("routes", route("web"), route("web", hostnames=["web.example.com"])),
    ("service-policies", service_policy("web"), service_policy("web", connect_timeout="3s")),
]


@pytest.mark.parametrize(("path", "document", "changed"), KINDS, ids=[k[0] for k in KINDS])
async def test_create_read_replace_delete(
    api: Api, path: str, document: dict[str, Any], changed: dict[str, Any]
) -> None:
    await api.put("listeners/public", listener())  # what routes need
    url = f"/v1/{path}/{document['name']}"

    created = await api.client.put(url, json=document)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["kind"] == document["kind"] and body["name"] == document["name"]
    assert body["spec"] == document["spec"]
    assert body["revision"] == 2 and body["warnings"] == []
    assert body["updated_at"].endswith("Z")
    assert created.headers["etag"] == '"2"'
    assert created.headers["location"] == url
    assert created.headers["x-config-revision"] == "2"

    read = await api.client.get(url)
    assert read.status_code == 200
    assert read.json() == body
    assert read.headers["etag"] == '"2"'

    replaced = await api.client.put(url, json=changed)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["spec"] == changed["spec"]
    assert replaced.json()["revision"] == 3
    assert replaced.headers["etag"] == '"3"'

    again = await api.client.put(url, json=changed)  # unchanged: no new revision
    assert again.status_code == 200
    assert again.json()["revision"] == 3
    assert await api.revision() == 3

    listed = (await api.client.get(f"/v1/{path}")).json()
    assert [item for item in listed["items"] if item["name"] == document["name"]] == [
        replaced.json()
    ]
    assert listed["next_page_token"] is None

    deleted = await api.client.delete(url)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert deleted.headers["x-config-revision"] == "4"
    assert_problem(await api.client.get(url), 404)
    assert_problem(await api.client.delete(url), 404)
    remaining = (await api.client.get(f"/v1/{path}")).json()["items"]
    assert document["name"] not in [item["name"] for item in remaining]


async def test_kind_and_name_may_be_omitted_but_must_match(api: Api) -> None:
    spec = {"port": 8080}
    assert (await api.client.put("/v1/listeners/a", json={"spec": spec})).status_code == 201

    wrong_kind = await api.client.put("/v1/listeners/b", json={"kind": "Route", "spec": spec})
    problem = assert_problem(wrong_kind, 422)
    assert "Route" in reason_at(problem, "kind")

    wrong_name = await api.client.put("/v1/listeners/b", json={"name": "c", "spec": spec})
    problem = assert_problem(wrong_name, 422)
    assert "'c'" in reason_at(problem, "name")
    assert (await api.client.get("/v1/listeners/b")).status_code == 404


async def test_an_invalid_name_in_the_url_is_refused(api: Api) -> None:
    problem = assert_problem(await api.client.put("/v1/listeners/Not_A_Name", json={}), 422)
    assert "not a valid name" in reason_at(problem, "name")


async def test_read_only_fields_sent_back_are_ignored(api: Api) -> None:
    created = (await api.put("listeners/public", listener())).json()
    created["spec"]["port"] = 8081
    replaced = await api.put("listeners/public", created)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["spec"]["port"] == 8081


async def test_specs_are_stored_in_normal_form(api: Api) -> None:
    doc = service_policy("web", connect_timeout="1m30s")
    stored = (await api.put("service-policies/web", doc)).json()
    assert stored["spec"] == {"connect_timeout": "90s"}  # canonical, defaults not filled in
    again = await api.put("service-policies/web", service_policy("web", connect_timeout="90s"))
    assert again.json()["revision"] == stored["revision"]


async def test_if_match(api: Api) -> None:
    await api.put("listeners/public", listener())
    stale = await api.put("listeners/public", listener(port=1), headers={"If-Match": '"9"'})
    problem = assert_problem(stale, 412)
    assert problem["errors"][0]["field"] == "header.if-match"
    assert stale.headers["etag"] == '"1"'

    fresh = await api.put("listeners/public", listener(port=2), headers={"If-Match": '"1"'})
    assert fresh.status_code == 200
    several = await api.put("listeners/public", listener(port=3), headers={"If-Match": '"1", "2"'})
    assert several.status_code == 200
    assert_problem(
        await api.client.delete("/v1/listeners/public", headers={"If-Match": '"2"'}), 412
    )
    assert (await api.client.get("/v1/listeners/public")).json()["spec"]["port"] == 3
    deleted = await api.client.delete("/v1/listeners/public", headers={"If-Match": '"3"'})
    assert deleted.status_code == 204

    missing = await api.put("listeners/other", listener("other"), headers={"If-Match": "*"})
    assert_problem(missing, 412)


async def test_if_none_match_star_creates_only(api: Api) -> None:
    first = await api.put("listeners/public", listener(), headers={"If-None-Match": "*"})
    assert first.status_code == 201
    second = await api.put("listeners/public", listener(port=1), headers={"If-None-Match": "*"})
    assert_problem(second, 412)
    assert (await api.client.get("/v1/listeners/public")).json()["spec"]["port"] == 8080


async def test_get_with_if_none_match_is_not_modified(api: Api) -> None:
    await api.put("listeners/public", listener())
    response = await api.client.get("/v1/listeners/public", headers={"If-None-Match": '"1"'})
    assert response.status_code == 304
    assert response.headers["etag"] == '"1"'
    changed = await api.client.get("/v1/listeners/public", headers={"If-None-Match": '"0"'})
    assert changed.status_code == 200


async def test_list_filters(api: Api) -> None:
    await api.put("listeners/public", listener("public", 8080))
    await api.put("listeners/internal", listener("internal", 8081, groups=["mesh"]))
    await api.put("routes/a", route("a", ("public",), ("web",)))
    await api.put("routes/b", route("b", ("internal",), ("web", "api")))
    mirror = {"backends": [{"service": "web"}], "filters": {"mirror": {"service": "catalog"}}}
    await api.put(
        "routes/c",
        route("c", ("public", "internal"), rules=[mirror], hostnames=["c.example.com"]),
    )

    async def names(url: str) -> list[str]:
        response = await api.client.get(url)
        assert response.status_code == 200, response.text
        return [item["name"] for item in response.json()["items"]]

    assert await names("/v1/routes") == ["a", "b", "c"]
    assert await names("/v1/routes?listener=public") == ["a", "c"]
    assert await names("/v1/routes?listener=internal") == ["b", "c"]
    assert await names("/v1/routes?service=api") == ["b"]
    assert await names("/v1/routes?service=catalog") == ["c"]  # a mirror counts
    assert await names("/v1/routes?service=web&listener=public") == ["a", "c"]
    assert await names("/v1/routes?hostname=c.example.com") == ["c"]
    assert await names("/v1/routes?listener=nowhere") == []
    assert await names("/v1/listeners?group=mesh") == ["internal", "public"]
    assert await names("/v1/listeners?group=edge") == ["public"]


async def test_list_paging(api: Api) -> None:
    names = [f"l{i:02d}" for i in range(7)]
    for index, name in enumerate(reversed(names)):
        await api.put(f"listeners/{name}", listener(name, 9000 + index))
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if token is not None:
            params["page_token"] = token
        page = (await api.client.get("/v1/listeners", params=params)).json()
        pages += 1
        seen += [item["name"] for item in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == names
    assert pages == 3

    bad = assert_problem(await api.client.get("/v1/listeners?page_token=nonsense"), 400)
    assert bad["errors"][0]["field"] == "query.page_token"
    assert_problem(await api.client.get("/v1/listeners?limit=0"), 422)
    too_many = assert_problem(await api.client.get("/v1/listeners?limit=1001"), 422)
    assert reason_at(too_many, "query.limit")


async def test_put_accepts_a_yaml_document(api: Api) -> None:
    text = yaml.safe_dump(listener())
    response = await api.client.put("/v1/listeners/public", content=text, headers=YAML)
    assert response.status_code == 201, response.text
    two = text + "---\n" + text
    problem = assert_problem(
        await api.client.put("/v1/listeners/public", content=two, headers=YAML), 422
    )
    assert problem["errors"][0]["field"] == "body"
