"""``POST /v1/apply``: JSON arrays and YAML streams, one transaction, all or nothing."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.unit.admin_harness import (
    EXAMPLES,
    YAML,
    Api,
    assert_problem,
    listener,
    new_store,
    retry_policy,
    route,
    running_api,
)
from xds_server.cli.files import directory_documents


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(new_store(request.param, tmp_path)) as running:
        yield running


async def test_apply_a_json_array_in_one_revision(api: Api) -> None:
    # The route comes before the listener it needs: the final config is what is validated.
    documents = [route(), listener(), retry_policy()]
    response = await api.client.post("/v1/apply", json=documents)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is False
    assert body["base_revision"] == 0 and body["revision"] == 1
    assert body["envoy"] is None
    assert [(d["kind"], d["name"], d["operation"], d["revision"]) for d in body["documents"]] == [
        ("Route", "web", "created", 1),
        ("Listener", "public", "created", 1),
        ("RetryPolicy", "default", "created", 1),
    ]
    assert {(c["kind"], c["operation"]) for c in body["changes"]} == {
        ("Route", "created"),
        ("Listener", "created"),
        ("RetryPolicy", "created"),
    }
    assert await api.revision() == 1
    history = (await api.client.get("/v1/history")).json()["items"]
    assert {entry["revision"] for entry in history} == {1}


async def test_apply_again_reports_unchanged_and_updated(api: Api) -> None:
    await api.client.post("/v1/apply", json=[listener(), route()])
    response = await api.client.post(
        "/v1/apply", json=[listener(), route(hostnames=["web.example.com"])]
    )
    body = response.json()
    assert [d["operation"] for d in body["documents"]] == ["unchanged", "updated"]
    assert body["documents"][0]["revision"] == 1
    assert body["revision"] == 2
    nothing = (await api.client.post("/v1/apply", json=[listener()])).json()
    assert nothing["revision"] == nothing["base_revision"] == 2
    assert nothing["changes"] == []


async def test_one_bad_document_writes_nothing(api: Api) -> None:
    await api.client.post("/v1/apply", json=[listener()])
    bad_regex = route("bad", rules=[{"matches": [{"path": {"regex": "("}}], "backends": []}])
    response = await api.client.post(
        "/v1/apply", json=[listener("other", 9000), route("good"), bad_regex]
    )
    problem = assert_problem(response, 422)
    located = {(e.get("index"), e["field"]) for e in problem["errors"]}
    assert (2, "spec.rules[0].matches[0].path.regex") in located
    assert all(e["index"] == 2 for e in problem["errors"])
    assert await api.revision() == 1
    assert (await api.client.get("/v1/listeners/other")).status_code == 404


async def test_a_reference_error_anywhere_writes_nothing(api: Api) -> None:
    response = await api.client.post(
        "/v1/apply", json=[listener(), route("a"), route("b", listeners=("nowhere",))]
    )
    problem = assert_problem(response, 422)
    assert [(e["index"], e["kind"], e["name"], e["field"]) for e in problem["errors"]] == [
        (2, "Route", "b", "spec.listeners[0]")
    ]
    assert await api.revision() == 0


async def test_a_document_listed_twice_is_refused(api: Api) -> None:
    problem = assert_problem(
        await api.client.post("/v1/apply", json=[listener(), listener(port=1)]), 422
    )
    assert problem["errors"][0]["index"] == 1
    assert "twice" in problem["errors"][0]["reason"]


async def test_apply_a_yaml_stream(api: Api) -> None:
    text = (EXAMPLES / "apply.yaml").read_text()
    response = await api.client.post("/v1/apply", content=text, headers=YAML)
    assert response.status_code == 200, response.text
    kinds = [d["kind"] for d in response.json()["documents"]]
    assert kinds == ["Listener", "RetryPolicy", "ServicePolicy", "Route"]
    assert await api.revision() == 1
    route_doc = (await api.client.get("/v1/routes/web")).json()
    assert route_doc["spec"]["rules"][0]["retry"] == {"policy": "default"}


async def test_apply_every_example_in_one_stream(api: Api) -> None:
    files = ["listener.yaml", "retry-policy.yaml", "route.yaml", "service-policy.yaml"]
    text = "\n---\n".join((EXAMPLES / f).read_text() for f in files)
    response = await api.client.post("/v1/apply", content=text, headers=YAML)
    assert response.status_code == 200, response.text
    assert len(response.json()["documents"]) == 4


async def test_a_yaml_syntax_error_names_the_line(api: Api) -> None:
    text = yaml.safe_dump(listener()) + "---\nkind: Route\nname: [unclosed\n"
    problem = assert_problem(await api.client.post("/v1/apply", content=text, headers=YAML), 400)
    assert "line" in problem["detail"]
    assert problem["errors"][0]["line"] >= 5
    assert await api.revision() == 0


async def test_a_yaml_list_of_documents_is_accepted(api: Api) -> None:
    text = yaml.safe_dump([listener(), route()])
    response = await api.client.post("/v1/apply", content=text, headers=YAML)
    assert response.status_code == 200, response.text
    assert len(response.json()["documents"]) == 2


async def test_yaml_aliases_cannot_blow_up(api: Api) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([previous] * 10)}]")
    text = "\n".join(lines) + "\n"
    assert_problem(await api.client.post("/v1/apply", content=text, headers=YAML), 400)


async def test_apply_bodies_that_are_not_documents(api: Api) -> None:
    problem = assert_problem(await api.client.post("/v1/apply", json=[1, listener()]), 422)
    assert problem["errors"] == [
        {"field": "body", "reason": "expected an object {kind, name, spec}", "index": 0}
    ]
    unknown = assert_problem(
        await api.client.post("/v1/apply", json=[{"kind": "Gateway", "name": "x", "spec": {}}]),
        422,
    )
    assert unknown["errors"][0]["field"] == "kind"
    odd = assert_problem(await api.client.post("/v1/apply", json=[{"kind": ["Route"]}]), 422)
    assert odd["errors"][0]["field"] == "kind"
    empty = await api.client.post("/v1/apply", json=[])
    assert empty.status_code == 200 and empty.json()["documents"] == []


PATH_OF_KIND = {
    "Listener": "listeners",
    "Route": "routes",
    "RetryPolicy": "retry-policies",
    "ServicePolicy": "service-policies",
    "TlsPolicy": "tls-policies",
    "Certificate": "certificates",
    "AuthPolicy": "auth-policies",
    "RateLimitPolicy": "rate-limit-policies",
}


@pytest.mark.parametrize("file", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
async def test_every_example_file_is_accepted(api: Api, file: str) -> None:
    """One document: PUT to its URL; a stream: POST to /v1/apply. (Routes in the examples
    need the example listener and retry policy, TLS policies the example certificates, so
    those are there first. The certificates' files need not exist: the server cannot read
    them, which is a warning, since Envoy reads them itself.)"""
    base = "\n---\n".join(
        (EXAMPLES / f).read_text()
        for f in ("listener.yaml", "retry-policy.yaml", "certificate.yaml", "ca-bundle.yaml")
    )
    assert (await api.client.post("/v1/apply", content=base, headers=YAML)).status_code == 200
    text = (EXAMPLES / file).read_text()
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    if len(documents) == 1:
        doc = documents[0]
        url = f"/v1/{PATH_OF_KIND[doc['kind']]}/{doc['name']}"
        response = await api.client.put(url, content=text, headers=YAML)
    else:
        response = await api.client.post("/v1/apply", content=text, headers=YAML)
    assert response.is_success, response.text


def _send(file: Path) -> tuple[str, str]:
    """How a file is sent: one document is PUT to its URL, a stream POSTed to /v1/apply."""
    documents = [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
    if len(documents) == 1:
        doc = documents[0]
        return "PUT", f"/v1/{PATH_OF_KIND[doc['kind']]}/{doc['name']}"
    return "POST", "/v1/apply"


async def test_every_example_file_applies_into_one_server_in_any_order(api: Api) -> None:
    """After the documents the examples refer to, every example file in turn, in a random
    order, into the same server: none clashes with another (a port, a name)."""
    seed = random.randrange(2**32)
    files = sorted(EXAMPLES.glob("*.yaml"))
    random.Random(seed).shuffle(files)
    base = "\n---\n".join(
        (EXAMPLES / f).read_text()
        for f in ("listener.yaml", "retry-policy.yaml", "certificate.yaml", "ca-bundle.yaml")
    )
    assert (await api.client.post("/v1/apply", content=base, headers=YAML)).status_code == 200
    for file in files:
        method, url = _send(file)
        response = await api.client.request(method, url, content=file.read_text(), headers=YAML)
        assert response.is_success, f"seed {seed}, {[f.name for f in files]}: {response.text}"


@pytest.mark.parametrize("order", ["sorted", "reversed", "random"])
async def test_all_examples_apply_as_one_directory(api: Api, tmp_path: Path, order: str) -> None:
    """``xds-server apply -f api/examples/`` in one revision, whatever order the files come
    in (copied under names that give that order)."""
    seed = random.randrange(2**32)
    files = sorted(EXAMPLES.glob("*.yaml"))
    if order == "reversed":
        files.reverse()
    elif order == "random":
        random.Random(seed).shuffle(files)
    for position, file in enumerate(files):
        (tmp_path / f"{position:02d}-{file.name}").write_text(file.read_text())
    response = await api.client.post("/v1/apply", json=directory_documents(tmp_path))
    assert response.status_code == 200, f"seed {seed}, {[f.name for f in files]}: {response.text}"
    assert await api.revision() == 1
    applied = {(d["kind"], d["name"]) for d in response.json()["documents"]}
    in_files = {
        (d["kind"], d["name"])
        for file in files
        for d in yaml.safe_load_all(file.read_text())
        if d is not None
    }
    assert applied == in_files
