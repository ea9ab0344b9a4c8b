"""The mesh through the REST API: ``/v1/mesh`` (one document), ``/v1/sidecars``,
``/v1/intentions``; every refusal is a 422 naming the field with nothing stored, and no
response ever holds a private key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.pki import TestCa
from tests.unit.admin_harness import (
    PROBLEM_JSON,
    Api,
    assert_problem,
    listener,
    new_store,
    reason_at,
    running_api,
)
from xds_server.admin.mesh_status import MeshStatus
from xds_server.mesh import MemoryVault, MeshAuthority
from xds_server.model import Config, Endpoint, Inventory, Service
from xds_server.model.mesh_checks import NO_MESH

REGISTRY = Inventory.of(
    {
        "api": Service("api", (Endpoint("10.0.0.1", 8080),), (Endpoint("10.0.0.1", 20000),)),
        "frontend": Service(
            "frontend", (Endpoint("10.0.0.2", 8080),), (Endpoint("10.0.0.2", 20000),)
        ),
    }
)
#: Bodies of the keys slipped into the status below: '-' is not base64, so no real PEM
#: shown by a response (a certificate's, say) can contain them by chance.
CA_KEY_BODY = "leaked-ca-key-body"
LEAF_KEY_BODY = "leaked-leaf-key-body"
CA_KEY = f"-----BEGIN PRIVATE KEY-----\n{CA_KEY_BODY}\n-----END PRIVATE KEY-----\n"
LEAF_KEY = f"-----BEGIN EC PRIVATE KEY-----\n{LEAF_KEY_BODY}\n-----END EC PRIVATE KEY-----\n"
#: What the CA authority would report; a key slipped in must never be shown.
LEAKY_STATUS: dict[str, Any] = {
    "ca": {
        "subject": "CN=mesh root",
        "fingerprint_sha256": "AB:CD",
        "not_after": "2027-01-01T00:00:00Z",
        "private_key": CA_KEY,
    },
    "identities": [
        {
            "service": "api",
            "spiffe_id": "spiffe://mesh.local/service/api",
            "serial": "0A1B",
            "not_after": "2026-12-04T00:00:00Z",
            "key_pem": LEAF_KEY,
        },
        CA_KEY,
    ],
}


def mesh(**spec: Any) -> dict[str, Any]:
    return {"kind": "Mesh", "name": "mesh", "spec": spec}


def sidecar(
    name: str, port: int = 20000, *upstreams: tuple[str, int], **inbound: Any
) -> dict[str, Any]:
    return {
        "kind": "Sidecar",
        "name": name,
        "spec": {
            "inbound": {"port": port, "local_port": 18080, **inbound},
            "upstreams": [{"service": s, "local_port": p} for s, p in upstreams],
        },
    }


def intention(
    name: str, source: str = "frontend", destination: str = "api", **spec: Any
) -> dict[str, Any]:
    spec = spec or {"action": "allow"}
    return {
        "kind": "Intention",
        "name": name,
        "spec": {"source": source, "destination": destination, **spec},
    }


L7: dict[str, Any] = {
    "permissions": [{"action": "allow", "http": {"path_exact": "/public", "methods": ["GET"]}}]
}


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """The API, every response of the test scanned for key material afterwards."""
    seen: list[httpx.Response] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        seen.append(response)

    async with running_api(
        new_store(request.param, tmp_path),
        inventory_=REGISTRY,
        mesh_status=lambda: LEAKY_STATUS,
    ) as running:
        running.client.event_hooks["response"].append(record)
        yield running
    assert seen
    for response in seen:
        assert "PRIVATE KEY" not in response.text, (response.request.url, response.text)
        assert CA_KEY_BODY not in response.text and LEAF_KEY_BODY not in response.text


async def refused(
    api: Api, method: str, path: str, body: Any, field: str, index: int | None = None
) -> str:
    """The reason at ``field`` (of the document at ``index`` of an apply) of a 422, after
    checking nothing was stored."""
    before = await api.revision()
    response = await api.client.request(method, f"/v1/{path}", json=body)
    problem = assert_problem(response, 422)
    assert await api.revision() == before
    if index is None:
        return reason_at(problem, field)
    for error in problem["errors"]:
        if error["field"] == field and error.get("index") == index:
            reason: str = error["reason"]
            return reason
    raise AssertionError(f"no error at [{index}] {field!r}: {problem['errors']}")


async def test_the_mesh_is_one_document(api: Api) -> None:
    missing = assert_problem(await api.client.get("/v1/mesh"), 404)
    assert "no Mesh is configured" in missing["detail"]
    created = await api.client.put("/v1/mesh", json={"spec": {"trust_domain": "corp.example"}})
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/mesh"
    etag = created.headers["etag"]
    read = await api.client.get("/v1/mesh")
    assert read.status_code == 200 and read.headers["etag"] == etag
    body = read.json()
    assert (body["kind"], body["name"]) == ("Mesh", "mesh")
    assert body["spec"] == {"trust_domain": "corp.example"}
    # Stored as written; the name may be given if it is the one name.
    same = await api.client.put("/v1/mesh", json=mesh(trust_domain="corp.example"))
    assert same.status_code == 200 and same.headers["etag"] == etag
    assert (await api.client.get("/v1/mesh", headers={"if-none-match": etag})).status_code == 304
    wrong = await refused(api, "PUT", "mesh", mesh() | {"name": "other"}, "name")
    assert "always named 'mesh'" in wrong
    assert (await api.client.get("/v1/mesh/mesh")).status_code in (404, 405)
    assert (await api.client.put("/v1/mesh/mesh", json=mesh())).status_code in (404, 405)


async def test_if_match_and_delete_turn_the_mesh_off(api: Api) -> None:
    first = await api.put("mesh", mesh())
    etag = first.headers["etag"]
    stale = await api.client.put(
        "/v1/mesh", json=mesh(mtls="permissive"), headers={"if-match": '"0"'}
    )
    assert_problem(stale, 412)
    replaced = await api.client.put(
        "/v1/mesh", json=mesh(mtls="permissive"), headers={"if-match": etag}
    )
    assert replaced.status_code == 200 and replaced.json()["spec"]["mtls"] == "permissive"
    create_only = await api.client.put("/v1/mesh", json=mesh(), headers={"if-none-match": "*"})
    assert_problem(create_only, 412)
    assert_problem(await api.client.delete("/v1/mesh", headers={"if-match": etag}), 412)
    assert (await api.put("sidecars/api", sidecar("api"))).status_code == 201
    assert (await api.client.delete("/v1/mesh")).status_code == 204
    assert_problem(await api.client.get("/v1/mesh"), 404)
    assert_problem(await api.client.delete("/v1/mesh"), 404)
    # Sidecars stay, and say they get nothing without a mesh.
    warnings = (await api.client.get("/v1/sidecars/api")).json()["warnings"]
    assert {"field": "kind", "reason": NO_MESH} in warnings


async def test_apply_history_and_rollback(api: Api) -> None:
    applied = await api.client.post("/v1/apply", json=[mesh(), sidecar("api")])
    assert applied.status_code == 200, applied.text
    with_mesh = await api.revision()
    before = await api.revision()
    other = assert_problem(await api.client.post("/v1/apply", json=[mesh() | {"name": "m2"}]), 422)
    assert any(e["field"].endswith("name") for e in other["errors"]), other
    assert await api.revision() == before
    assert (await api.client.delete("/v1/mesh")).status_code == 204
    history = (await api.client.get("/v1/history", params={"kind": "mesh"})).json()["items"]
    assert [e["operation"] for e in history] == ["delete", "create"]
    assert {e["kind"] for e in history} == {"Mesh"}
    back = await api.client.post("/v1/rollback", json={"revision": with_mesh})
    assert back.status_code == 200, back.text
    assert (await api.client.get("/v1/mesh")).json()["spec"] == {}


async def test_get_mesh_shows_the_status_without_keys(api: Api) -> None:
    await api.put("mesh", mesh())
    status = (await api.client.get("/v1/mesh")).json()["status"]
    assert status["ca"] == {
        "subject": "CN=mesh root",
        "fingerprint_sha256": "AB:CD",
        "not_after": "2027-01-01T00:00:00Z",
    }
    assert status["identities"] == [
        {
            "service": "api",
            "spiffe_id": "spiffe://mesh.local/service/api",
            "serial": "0A1B",
            "not_after": "2026-12-04T00:00:00Z",
        }
    ]


async def test_a_failing_status_source_still_shows_the_mesh(tmp_path: Path) -> None:
    def broken() -> Mapping[str, Any]:
        raise RuntimeError("CA not ready")

    async with running_api(new_store("memory", tmp_path), mesh_status=broken) as api:
        await api.put("mesh", mesh())
        read = await api.client.get("/v1/mesh")
        assert read.status_code == 200 and read.json()["status"] is None
    async with running_api(new_store("memory", tmp_path)) as api:  # no source wired in
        await api.put("mesh", mesh())
        assert (await api.client.get("/v1/mesh")).json()["status"] is None


async def test_sidecars_and_intentions_are_collections_with_filters(api: Api) -> None:
    await api.put("mesh", mesh())
    front = sidecar("frontend", 20000, ("api", 9001))
    front["spec"]["groups"] = ["frontend", "frontend-canary"]
    for doc in (sidecar("api"), front):
        assert (await api.put(f"sidecars/{doc['name']}", doc)).status_code == 201
    for doc in (intention("f-api"), intention("any-api", "*", **L7)):
        response = await api.put(f"intentions/{doc['name']}", doc)
        assert response.status_code == 201 and response.json()["warnings"] == [], response.text

    async def names(url: str, **params: str) -> list[str]:
        response = await api.client.get(url, params=params)
        assert response.status_code == 200, response.text
        return [item["name"] for item in response.json()["items"]]

    assert await names("/v1/sidecars") == ["api", "frontend"]
    assert await names("/v1/sidecars", group="frontend-canary") == ["frontend"]
    assert await names("/v1/sidecars", upstream="api") == ["frontend"]
    assert await names("/v1/intentions", source="*") == ["any-api"]
    assert await names("/v1/intentions", destination="api") == ["any-api", "f-api"]
    assert (await api.client.delete("/v1/intentions/f-api")).status_code == 204
    assert_problem(await api.client.get("/v1/intentions/f-api"), 404)


async def test_sidecars_and_intentions_without_a_mesh_are_accepted_with_a_warning(api: Api) -> None:
    for path, doc in (("sidecars/api", sidecar("api")), ("intentions/i", intention("i"))):
        response = await api.put(path, doc)
        assert response.status_code == 201, response.text
        assert {"field": "kind", "reason": NO_MESH} in response.json()["warnings"]
    await api.put("mesh", mesh())
    assert (await api.client.get("/v1/intentions/i")).json()["warnings"] == []


async def test_a_sidecar_for_an_unknown_service_is_a_warning(api: Api) -> None:
    await api.put("mesh", mesh())
    response = await api.put("sidecars/ghost", sidecar("ghost", 20000, ("nobody", 9001)))
    assert response.status_code == 201, response.text
    warnings = {w["field"]: w["reason"] for w in response.json()["warnings"]}
    assert "'ghost' is not in the registry" in warnings["name"]
    assert "'nobody' is not in the registry" in warnings["spec.upstreams[0].service"]


async def test_the_models_refusals_name_the_field(api: Api) -> None:
    same = intention("loop", "api", "api")
    assert "must differ" in await refused(api, "PUT", "intentions/loop", same, "spec.destination")
    unknown = intention("odd", action="maybe")
    assert await refused(api, "PUT", "intentions/odd", unknown, "spec.action")
    short = mesh(certificate_ttl="30s")
    assert "1m" in await refused(api, "PUT", "mesh", short, "spec.certificate_ttl")
    assert_problem(await api.client.get("/v1/mesh"), 404)
    assert_problem(await api.client.get("/v1/intentions/loop"), 404)


async def test_two_intentions_for_one_pair_are_refused(api: Api) -> None:
    await api.client.post("/v1/apply", json=[mesh(), sidecar("api"), intention("first")])
    second = intention("second", action="deny")
    reason = await refused(api, "PUT", "intentions/second", second, "spec.source")
    assert "intention 'first'" in reason
    assert_problem(await api.client.get("/v1/intentions/second"), 404)
    # In one apply too: nothing of it is written.
    both = [intention("a", "*"), intention("b", "*")]
    assert "intention 'a'" in await refused(api, "POST", "apply", both, "spec.source", 1)


async def test_l7_permissions_on_a_tcp_destination_are_refused(api: Api) -> None:
    await api.client.post("/v1/apply", json=[mesh(), sidecar("api", protocol="tcp")])
    reason = await refused(api, "PUT", "intentions/l7", intention("l7", **L7), "spec.permissions")
    assert "tcp" in reason
    # And the other way round: a destination cannot become tcp under an L7 intention.
    await api.put("sidecars/api", sidecar("api"))
    assert (await api.put("intentions/l7", intention("l7", **L7))).status_code == 201
    tcp = sidecar("api", protocol="tcp")
    before = await api.revision()
    problem = assert_problem(await api.put("sidecars/api", tcp), 422)
    assert await api.revision() == before
    assert any(e["field"] == "spec.permissions" and "tcp" in e["reason"] for e in problem["errors"])


async def test_ports_colliding_in_a_group_are_refused(api: Api) -> None:
    await api.client.post("/v1/apply", json=[mesh(), listener("edge", 9001)])
    colliding = sidecar("frontend", 20000, ("api", 9001))
    field = "spec.upstreams[0].local_port"
    assert "listener 'edge'" in await refused(api, "PUT", "sidecars/frontend", colliding, field)
    assert_problem(await api.client.get("/v1/sidecars/frontend"), 404)
    inbound = sidecar("api", 9001)
    assert "listener 'edge'" in await refused(
        api, "PUT", "sidecars/api", inbound, "spec.inbound.port"
    )
    # The listener only for another group: no collision.
    await api.put("listeners/edge", listener("edge", 9001, groups=["edge"]))
    assert (await api.put("sidecars/frontend", colliding)).status_code == 201
    # A listener written later that would collide names the sidecar in its own field.
    late = listener("late", 20000, groups=["frontend"])
    assert "sidecar 'frontend'" in await refused(api, "PUT", "listeners/late", late, "spec.port")
    # Another sidecar in the same group.
    shared = sidecar("api", 9001)
    shared["spec"]["groups"] = ["frontend"]
    assert "sidecar 'frontend'" in await refused(
        api, "PUT", "sidecars/api", shared, "spec.inbound.port"
    )


async def test_a_group_fronting_two_services_is_refused(api: Api) -> None:
    """A group's proxies get one config and one identity: a second Sidecar naming a group
    that already fronts a service is a 422 at spec.groups, nothing stored, even on other
    ports (which would otherwise bind nothing twice)."""
    await api.client.post("/v1/apply", json=[mesh(), sidecar("frontend", 20000, ("api", 9001))])
    two = sidecar("api", 20001, ("frontend", 9002))
    two["spec"]["groups"] = ["api", "frontend"]
    reason = await refused(api, "PUT", "sidecars/api", two, "spec.groups")
    assert "proxy group 'frontend' would front two services, 'frontend' and 'api'" in reason
    assert "one config and one identity" in reason
    assert_problem(await api.client.get("/v1/sidecars/api"), 404)
    # By default, the group named like another service is that service's.
    web = sidecar("web", 20002)
    web["spec"]["groups"] = ["frontend"]
    assert "two services, 'frontend' and 'web'" in await refused(
        api, "PUT", "sidecars/web", web, "spec.groups"
    )
    both = [
        sidecar("api", 20001),
        {**sidecar("web", 20002), "spec": {**web["spec"], "groups": ["api"]}},
    ]
    assert "two services, 'api' and 'web'" in await refused(
        api, "POST", "apply", both, "spec.groups", 1
    )
    # A group of its own is fine.
    two["spec"]["groups"] = ["api", "api-canary"]
    assert (await api.put("sidecars/api", two)).status_code == 201


def _ca_document(name: str, chain: str, key: str) -> dict[str, Any]:
    return {"kind": "Certificate", "name": name, "spec": {"certificate": chain, "private_key": key}}


async def test_a_provided_ca_is_checked(api: Api, tmp_path: Path) -> None:
    ca, other = TestCa(), TestCa()
    ca_key = ca.ca.private_key_pem.bytes().decode()
    provided = mesh(ca={"provider": "provided", "certificate": "root"})
    field = "spec.ca.certificate"
    assert "no certificate 'root'" in await refused(api, "PUT", "mesh", provided, field)
    await api.put("certificates/bundle", ca.bundle_document("bundle"))
    leaf = ca.issue("api.example.com")
    await api.put("certificates/leaf", leaf.document("leaf"))
    for name, expected in (("bundle", "CA bundle"), ("leaf", "CA:true")):
        wrong = mesh(ca={"provider": "provided", "certificate": name})
        assert expected in await refused(api, "PUT", "mesh", wrong, field)
    # A key that does not match the CA: the Certificate itself is refused (and the mesh with
    # it, in one apply). Files with a key that does: refused too, the server signs with the
    # key and does not read key files.
    mismatched = _ca_document("root", ca.pem, other.ca.private_key_pem.bytes().decode())
    assert "does not match" in await refused(
        api, "POST", "apply", [mismatched, provided], "spec", 0
    )
    chain_file, key_file = tmp_path / "ca.pem", tmp_path / "ca.key"
    chain_file.write_text(ca.pem)
    key_file.write_text(ca_key)
    in_files = {
        "kind": "Certificate",
        "name": "root",
        "spec": {"certificate_file": str(chain_file), "private_key_file": str(key_file)},
    }
    assert "inline" in await refused(
        api, "POST", "apply", [in_files, provided], "spec.ca.certificate", 1
    )
    assert_problem(await api.client.get("/v1/mesh"), 404)
    assert_problem(await api.client.get("/v1/certificates/root"), 404)
    # The CA with its own key: accepted, and in use it cannot be deleted.
    good = await api.client.post("/v1/apply", json=[_ca_document("root", ca.pem, ca_key), provided])
    assert good.status_code == 200, good.text
    in_use = assert_problem(await api.client.delete("/v1/certificates/root"), 409)
    assert "Mesh 'mesh'" in in_use["detail"]


async def test_problem_responses_are_problem_json(api: Api) -> None:
    response = await api.client.get("/v1/mesh")
    assert response.headers["content-type"] == PROBLEM_JSON


async def test_the_real_authoritys_status_is_shown_as_documented(tmp_path: Path) -> None:
    """``GET /v1/mesh`` over the CA authority the server wires in: the CA and the issued
    identity, in the published shape, and no key of either."""
    config = Config.from_documents(
        [("Mesh", "mesh", {}, 1), ("Sidecar", "api", sidecar("api")["spec"], 2)]
    )
    ca = MeshAuthority(MemoryVault(), lambda identities: None)
    await ca.set_config(config)
    async with running_api(new_store("memory", tmp_path), mesh_status=ca.status) as api:
        await api.put("mesh", mesh())
        response = await api.client.get("/v1/mesh")
    assert response.status_code == 200, response.text
    assert "PRIVATE KEY" not in response.text
    status = MeshStatus.model_validate(response.json()["status"])
    assert status.ca is not None and status.ca.fingerprint_sha256
    assert [(i.service, i.spiffe_id) for i in status.identities] == [
        ("api", "spiffe://mesh.local/service/api")
    ]
    assert ca.identities.by_service["api"].private_key not in response.text


def mesh_route(name: str, upstreams: list[str], *backends: str) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "spec": {
            "upstreams": upstreams,
            "rules": [{"backends": [{"service": b} for b in backends]}],
        },
    }


async def test_a_route_attached_to_upstreams_sends_to_mesh_services_only(api: Api) -> None:
    await api.client.post("/v1/apply", json=[mesh(), sidecar("api"), sidecar("frontend", 20001)])
    bad = mesh_route("canary", ["api"], "frontend", "api-v9")
    reason = await refused(api, "PUT", "routes/canary", bad, "spec.rules[0].backends[1].service")
    assert "a route attached to mesh upstreams sends to mesh services only" in reason
    assert_problem(await api.client.get("/v1/routes/canary"), 404)
    good = await api.put("routes/canary", mesh_route("canary", ["api"], "api", "frontend"))
    assert good.status_code == 201, good.text
    assert good.json()["warnings"] == []
    # A route needs listeners, upstreams or both.
    none = {"kind": "Route", "name": "n", "spec": {"rules": [{"backends": [{"service": "api"}]}]}}
    assert "at least one" in await refused(api, "PUT", "routes/n", none, "spec.listeners")


async def test_a_route_attached_to_an_upstream_without_a_sidecar_is_a_warning(api: Api) -> None:
    await api.client.post("/v1/apply", json=[mesh(), sidecar("api")])
    response = await api.put("routes/r", mesh_route("r", ["api", "ghost"], "api"))
    assert response.status_code == 201, response.text
    warnings = {w["field"]: w["reason"] for w in response.json()["warnings"]}
    assert "no Sidecar for service 'ghost'" in warnings["spec.upstreams[1]"]
    assert "spec.upstreams[0]" not in warnings


# -- POST /v1/mesh/rotate-root ----------------------------------------------------------------


async def test_rotate_root_answers_the_status_with_both_roots_or_409(tmp_path: Path) -> None:
    ca = MeshAuthority(MemoryVault(), lambda identities: None)
    context: dict[str, Any] = {"mesh_status": ca.status, "mesh_rotate_root": ca.rotate_root}
    async with running_api(new_store("memory", tmp_path), inventory_=REGISTRY, **context) as api:
        no_mesh = assert_problem(await api.client.post("/v1/mesh/rotate-root"), 409)
        assert no_mesh["type"].endswith("no-mesh") and "no Mesh document" in no_mesh["detail"]
        await ca.set_config(
            Config.from_documents(
                [("Mesh", "mesh", {}, 1), ("Sidecar", "api", sidecar("api")["spec"], 2)]
            )
        )
        old = ca.status()["ca"]
        started = await api.client.post("/v1/mesh/rotate-root")
        assert started.status_code == 202, started.text
        status = MeshStatus.model_validate(started.json())
        assert status.ca is not None and status.ca.fingerprint_sha256 == old["fingerprint_sha256"]
        bundle = [root.fingerprint_sha256 for root in status.trust_bundle]
        assert len(bundle) == 2 and bundle[0] == old["fingerprint_sha256"]
        assert status.rotation is not None and status.rotation.next_step == "issue"
        assert status.rotation.to.fingerprint_sha256 == bundle[1]
        assert "PRIVATE KEY" not in started.text
        again = assert_problem(await api.client.post("/v1/mesh/rotate-root"), 409)
        assert again["type"].endswith("rotation-in-progress")
        assert "already under way" in again["detail"]
        assert await api.revision() == 0  # a CA action, no config revision


async def test_rotate_root_refuses_a_provided_ca_and_a_server_without_mesh_ca(
    tmp_path: Path,
) -> None:
    ca = MeshAuthority(MemoryVault(), lambda identities: None)
    import datetime as dt

    from xds_server.mesh import generate_root

    corp = generate_root("corp.example", dt.datetime.now(dt.UTC))
    await ca.set_config(
        Config.from_documents(
            [
                ("Mesh", "mesh", {"ca": {"provider": "provided", "certificate": "corp"}}, 1),
                (
                    "Certificate",
                    "corp",
                    {"certificate": corp.certificate, "private_key": corp.private_key},
                    2,
                ),
                ("Sidecar", "api", sidecar("api")["spec"], 3),
            ]
        )
    )
    context: dict[str, Any] = {"mesh_status": ca.status, "mesh_rotate_root": ca.rotate_root}
    async with running_api(new_store("memory", tmp_path), inventory_=REGISTRY, **context) as api:
        provided = assert_problem(await api.client.post("/v1/mesh/rotate-root"), 409)
        assert provided["type"].endswith("provided-ca")
        assert "spec.ca.certificate" in provided["detail"]
    async with running_api(new_store("memory", tmp_path), inventory_=REGISTRY) as api:
        assert_problem(await api.client.post("/v1/mesh/rotate-root"), 409)


async def test_rotate_root_needs_a_write_token(tmp_path: Path) -> None:
    from xds_server.admin.app import create_admin_app
    from xds_server.admin.context import AdminContext
    from xds_server.admin.middleware.auth import AdminToken, TokenSet, hash_token, install_auth

    ca = MeshAuthority(MemoryVault(), lambda identities: None)
    await ca.set_config(Config.from_documents([("Mesh", "mesh", {}, 1)]))
    store = new_store("memory", tmp_path)
    await store.open()
    app = create_admin_app(
        AdminContext(
            store=store,
            inventory=lambda: REGISTRY,
            mesh_status=ca.status,
            mesh_rotate_root=ca.rotate_root,
        )
    )
    install_auth(
        app,
        TokenSet(
            [
                AdminToken("w", hash_token("write-1"), "write"),
                AdminToken("r", hash_token("read-1"), "read"),
            ]
        ),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        path = "/v1/mesh/rotate-root"
        assert (await client.post(path)).status_code == 401
        read = await client.post(path, headers={"authorization": "Bearer read-1"})
        assert read.status_code == 403
        assert ca.status()["rotation"] is None
        written = await client.post(path, headers={"authorization": "Bearer write-1"})
        assert written.status_code == 202, written.text
    await store.close()
