"""Bearer tokens on the admin API: every ``/v1`` route refuses a missing or unknown token
(401), a read token on a write (403), and works with a write token; the token's name is the
actor in history; health, readiness and metrics stay open."""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from fastapi import FastAPI

from tests.unit.admin_harness import PROBLEM_JSON, inventory, listener, retry_policy, route
from tests.unit.admin_harness import service_policy as service_policy_doc
from xds_server.admin.app import create_admin_app
from xds_server.admin.context import AdminContext
from xds_server.admin.middleware.auth import (
    AdminToken,
    TokenFile,
    TokenSet,
    hash_token,
    install_auth,
    load_tokens,
    parse_tokens,
    request_actor,
)
from xds_server.settings import SecuritySettings, check_admin_exposure, is_loopback
from xds_server.store import MemoryStore

WRITE, READ = "w-secret-token-1", "r-secret-token-2"
TOKENS = TokenSet(
    [
        AdminToken("deployer", hash_token(WRITE), "write"),
        AdminToken("dashboard", hash_token(READ), "read"),
    ]
)


@dataclass
class Authed:
    app: FastAPI
    client: httpx.AsyncClient
    store: MemoryStore

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.client.request(method, path, headers=headers, **kw)


@pytest.fixture
async def api() -> AsyncIterator[Authed]:
    store = MemoryStore()
    await store.open()
    inv = inventory()
    app = create_admin_app(AdminContext(store=store, inventory=lambda: inv, actor=request_actor))
    install_auth(app, TOKENS)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            yield Authed(app, client, store)
    finally:
        await store.close()


def _ca_bundle() -> str:
    return trustme.CA().cert_pem.bytes().decode()


def _documents() -> dict[str, dict[str, Any]]:
    """A valid document per URL segment of a kind."""
    return {
        "listeners": listener("public"),
        "routes": route("web"),
        "retry-policies": retry_policy("default"),
        "service-policies": service_policy_doc("web"),
        "tls-policies": {"kind": "TlsPolicy", "name": "tp", "spec": {"upstream": {}}},
        "certificates": {
            "kind": "Certificate",
            "name": "ca",
            "spec": {"ca_bundle": _ca_bundle()},
        },
        "auth-policies": {
            "kind": "AuthPolicy",
            "name": "jwt",
            "spec": {
                "providers": [{"name": "idp", "jwks": {"url": "http://127.0.0.1:1/jwks.json"}}]
            },
        },
        "rate-limit-policies": {
            "kind": "RateLimitPolicy",
            "name": "rl",
            "spec": {"requests": 10},
        },
        "sidecars": {
            "kind": "Sidecar",
            "name": "web",
            "spec": {"inbound": {"port": 20000, "local_port": 18080}},
        },
        "intentions": {
            "kind": "Intention",
            "name": "api-to-web",
            "spec": {"source": "api", "destination": "web", "action": "allow"},
        },
        "tcp-routes": {
            "kind": "TcpRoute",
            "name": "db",
            "spec": {"listeners": ["raw-tcp"], "backends": [{"service": "api"}]},
        },
        "tls-routes": {
            "kind": "TlsRoute",
            "name": "sni",
            "spec": {
                "listeners": ["raw-tls"],
                "hostnames": ["a.example"],
                "backends": [{"service": "api"}],
            },
        },
    }


MESH = {"kind": "Mesh", "name": "mesh", "spec": {"trust_domain": "mesh.test"}}


def v1_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path template) under /v1, from the OpenAPI document (FastAPI includes
    routers lazily, so ``app.routes`` does not list them)."""
    paths = app.openapi()["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1")
        for method in operations
    }


def assert_refused(response: httpx.Response, status: int, error: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status and body["detail"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    if error is not None:
        assert f'error="{error}"' in challenge
    else:
        assert "error=" not in challenge


async def test_every_v1_route_needs_a_token_and_a_write_token_to_write(api: Authed) -> None:
    docs = _documents()
    by_segment = {segment: doc for segment, doc in docs.items()}
    # Requests in an order that makes each succeed: create the referenced documents first.
    plan: list[tuple[str, str, str, Any]] = []  # (method, template, concrete path, json)
    plan.append(("PUT", "/v1/mesh", "/v1/mesh", MESH))
    for segment in (
        "listeners",
        "retry-policies",
        "service-policies",
        "certificates",
        "auth-policies",
        "rate-limit-policies",
        "sidecars",
        "intentions",
    ):
        doc = by_segment[segment]
        plan.append(("PUT", f"/v1/{segment}/{{name}}", f"/v1/{segment}/{doc['name']}", doc))
    tls = by_segment["tls-policies"]
    plan.append(("PUT", "/v1/tls-policies/{name}", f"/v1/tls-policies/{tls['name']}", tls))
    streams = (listener("raw-tcp", 9100, protocol="tcp"), listener("raw-tls", 9101, protocol="tls"))
    for stream in streams:
        plan.append(("PUT", "/v1/listeners/{name}", f"/v1/listeners/{stream['name']}", stream))
    for segment in ("tcp-routes", "tls-routes"):
        doc = by_segment[segment]
        plan.append(("PUT", f"/v1/{segment}/{{name}}", f"/v1/{segment}/{doc['name']}", doc))
    plan.append(("PUT", "/v1/routes/{name}", "/v1/routes/web", by_segment["routes"]))
    before_apply = len(plan)  # each PUT so far made one revision
    plan.append(("POST", "/v1/apply", "/v1/apply", [route("web", hostnames=["a.example"])]))
    for segment, doc in docs.items():
        plan.append(("GET", f"/v1/{segment}", f"/v1/{segment}", None))
        plan.append(("GET", f"/v1/{segment}/{{name}}", f"/v1/{segment}/{doc['name']}", None))
    plan += [
        ("GET", "/v1/mesh", "/v1/mesh", None),
        ("GET", "/v1/history", "/v1/history", None),
        ("GET", "/v1/proxies", "/v1/proxies", None),
        ("POST", "/v1/rollback", "/v1/rollback", {"revision": before_apply}),
        ("DELETE", "/v1/routes/{name}", "/v1/routes/web", None),
    ]
    for segment in (
        "tcp-routes",
        "tls-routes",
        "intentions",
        "sidecars",
        "tls-policies",
        "certificates",
        "retry-policies",
        "service-policies",
        "auth-policies",
        "rate-limit-policies",
    ):
        doc = by_segment[segment]
        plan.append(("DELETE", f"/v1/{segment}/{{name}}", f"/v1/{segment}/{doc['name']}", None))
    plan.append(("DELETE", "/v1/listeners/{name}", "/v1/listeners/public", None))
    plan.append(("DELETE", "/v1/mesh", "/v1/mesh", None))
    planned = {(method, template) for method, template, _, _ in plan}
    # Other reads (proxies, events): no proxy is connected, so one by name is a 404.
    absent: set[str] = set()
    for method, template in sorted(v1_routes(api.app) - planned):
        if method == "GET":
            path = template.replace("{revision}", "1")
            path = re.sub(r"\{[^}]+\}", "nobody", path)
            plan.append((method, template, path, None))
            planned.add((method, template))
            if "nobody" in path:
                absent.add(path)
    assert len(v1_routes(api.app)) >= 28  # the enumeration itself works
    # Makes no revision (a mesh CA action): its tokens are tested in test_admin_mesh.py.
    missing = v1_routes(api.app) - planned - {("POST", "/v1/mesh/rotate-root")}
    assert not missing, f"routes without an auth test: {sorted(missing)}"

    for method, template, path, body in plan:
        kw: dict[str, Any] = {"json": body} if body is not None else {}
        assert_refused(await api.call(method, path, **kw), 401, None)
        assert_refused(await api.call(method, path, "not-a-token", **kw), 401, "invalid_token")
        assert_refused(await api.call(method, path, f"{WRITE}x", **kw), 401, "invalid_token")
        ok = 404 if path in absent else 200
        read = await api.call(method, path, READ, **kw)
        if method == "GET":
            assert read.status_code == ok, (method, path, read.text)
        else:
            assert_refused(read, 403, "insufficient_scope")
        revision = api.store.current().revision
        written = await api.call(method, path, WRITE, **kw)
        if path in absent:
            assert written.status_code == 404, (method, path, written.text)
        else:
            assert 200 <= written.status_code < 300, (method, template, written.text)
        if method != "GET":
            assert api.store.current().revision == revision + 1, (method, path)
    print(f"{len(planned)} /v1 routes x 5 callers: {sorted(planned)}")
    # Every change was recorded under the write token's name.
    history = await api.store.history(limit=1000)
    assert history and {e.actor for e in history} == {"deployer"}


async def test_refused_before_the_body_is_read(api: Authed) -> None:
    huge = b"x" * (4 << 20)  # over the body limit: the auth answers first
    response = await api.call(
        "POST", "/v1/apply", content=huge, headers={"content-type": "application/json"}
    )
    assert_refused(response, 401, None)
    assert api.store.current().revision == 0
    with_read = await api.call(
        "PUT", "/v1/routes/web", READ, content=huge, headers={"content-type": "application/json"}
    )
    assert_refused(with_read, 403, "insufficient_scope")


async def test_health_readiness_and_metrics_are_open_the_rest_is_not(api: Authed) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        response = await api.call("GET", path)
        assert response.status_code == 200, (path, response.text)
    for path in ("/openapi.json", "/docs", "/v1/routes"):
        assert_refused(await api.call("GET", path), 401, None)
    # Other schemes and malformed headers are no token at all.
    for header in ("Basic dTpw", "Bearer", "Bearer ", WRITE):
        response = await api.client.get("/v1/routes", headers={"Authorization": header})
        assert_refused(response, 401, None)
    ok = await api.client.get("/v1/routes", headers={"Authorization": f"bearer  {READ}"})
    assert ok.status_code == 200


async def test_no_cors_by_default(api: Authed) -> None:
    preflight = await api.call(
        "OPTIONS",
        "/v1/routes",
        WRITE,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    got = await api.call("GET", "/v1/routes", READ, headers={"Origin": "https://evil.example"})
    assert got.status_code == 200
    assert "access-control-allow-origin" not in got.headers


def test_token_files_yaml_and_json(tmp_path: Path) -> None:
    entries = [
        {"name": "ci", "token_sha256": hash_token("a"), "role": "write"},
        {"name": "grafana", "token_sha256": hash_token("b").upper(), "role": "read"},
    ]
    yaml_file = tmp_path / "tokens.yaml"
    yaml_file.write_text(
        "tokens:\n"
        + "".join(
            f"  - {{name: {e['name']}, token_sha256: {e['token_sha256']}, role: {e['role']}}}\n"
            for e in entries
        )
    )
    json_file = tmp_path / "tokens.json"
    json_file.write_text(json.dumps(entries))
    for path in (yaml_file, json_file):
        tokens = load_tokens(path)
        found_a, found_b = tokens.find("a"), tokens.find("b")
        assert found_a is not None and found_b is not None
        assert (found_a.name, found_a.role) == ("ci", "write")
        assert (found_b.name, found_b.role) == ("grafana", "read")
        assert tokens.find("c") is None
        assert tokens.find("") is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"tokens": "x"}, "expected a list"),
        ([{"name": "a", "token_sha256": "abc", "role": "read"}], "64 hex digits"),
        ([{"name": "a", "token": "plain", "token_sha256": "0" * 64, "role": "read"}], "unknown"),
        ([{"name": "a", "token_sha256": "0" * 64, "role": "admin"}], "role"),
        ([{"name": "", "token_sha256": "0" * 64, "role": "read"}], "name"),
        (
            [
                {"name": "a", "token_sha256": "0" * 64, "role": "read"},
                {"name": "a", "token_sha256": "1" * 64, "role": "read"},
            ],
            "twice",
        ),
        (
            [
                {"name": "a", "token_sha256": "0" * 64, "role": "read"},
                {"name": "b", "token_sha256": "0" * 64, "role": "write"},
            ],
            "same token",
        ),
        ([], "no tokens"),
    ],
)
def test_invalid_token_files_are_refused_with_the_reason(data: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_tokens(data)


def test_a_changed_token_file_is_reloaded_and_a_broken_one_ignored(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"

    def write(entries: list[dict[str, str]]) -> None:
        path.write_text(json.dumps(entries))
        stat = path.stat()  # make the change visible even within one mtime tick
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))

    write([{"name": "old", "token_sha256": hash_token("one"), "role": "write"}])
    tokens = TokenFile(path, check_every=0)
    assert tokens.current().find("one") is not None
    write([{"name": "new", "token_sha256": hash_token("two"), "role": "read"}])
    current = tokens.current()
    assert current.find("one") is None
    found = current.find("two")
    assert found is not None and found.name == "new"
    path.write_text("tokens: [")  # broken: keep the previous tokens
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 20_000_000_000))
    assert tokens.current().find("two") is not None
    with pytest.raises(ValueError, match="admin tokens file"):
        load_tokens(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("admin.internal", False),
    ],
)
def test_an_exposed_admin_api_needs_tokens_or_an_explicit_flag(host: str, loopback: bool) -> None:
    assert is_loopback(host) == loopback
    if loopback:
        check_admin_exposure(host, SecuritySettings())
    else:
        with pytest.raises(ValueError, match="--admin-tokens"):
            check_admin_exposure(host, SecuritySettings())
    check_admin_exposure(host, SecuritySettings(admin_tokens="tokens.yaml"))
    check_admin_exposure(host, SecuritySettings(insecure_admin=True))
