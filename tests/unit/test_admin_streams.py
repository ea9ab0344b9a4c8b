"""``tcp-routes`` and ``tls-routes`` over REST, and ``tcp``/``tls`` listeners: the collection
lifecycle, and bad input refused with 422 naming the field, nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.admin_harness import (
    YAML,
    Api,
    assert_problem,
    listener,
    new_store,
    reason_at,
    route,
    running_api,
)


def tcp_route(
    name: str = "db", listeners: tuple[str, ...] = ("db",), **spec: Any
) -> dict[str, Any]:
    return {
        "kind": "TcpRoute",
        "name": name,
        "spec": {"listeners": list(listeners), "backends": [{"service": "api"}], **spec},
    }


def tls_route(
    name: str = "shop",
    hostnames: tuple[str, ...] = ("shop.example.com",),
    listeners: tuple[str, ...] = ("sni",),
    **spec: Any,
) -> dict[str, Any]:
    return {
        "kind": "TlsRoute",
        "name": name,
        "spec": {
            "listeners": list(listeners),
            "hostnames": list(hostnames),
            "backends": [{"service": "web"}],
            **spec,
        },
    }


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(new_store(request.param, tmp_path)) as running:
        for document in (
            listener("public", 8080),
            listener("db", 9000, protocol="tcp"),
            listener("sni", 9443, protocol="tls"),
            listener("sni2", 9444, protocol="tls"),
        ):
            assert (await running.put(f"listeners/{document['name']}", document)).is_success
        yield running


async def refused(api: Api, path: str, document: dict[str, Any]) -> dict[str, Any]:
    """The 422 problem of a PUT, after checking nothing was written."""
    before = await api.revision()
    problem = assert_problem(await api.put(path, document), 422)
    assert await api.revision() == before
    assert (await api.client.get(f"/v1/{path}")).status_code in (200, 404)
    return problem


async def test_tcp_routes_are_created_read_listed_updated_and_deleted(api: Api) -> None:
    created = await api.put("tcp-routes/db", tcp_route(idle_timeout="90s"))
    assert created.status_code == 201, created.text
    read = (await api.client.get("/v1/tcp-routes/db")).json()
    assert read["spec"]["idle_timeout"] == "90s"
    assert read["spec"]["backends"] == [{"service": "api"}]  # as written
    listed = (await api.client.get("/v1/tcp-routes")).json()["items"]
    assert [item["name"] for item in listed] == ["db"]
    updated = await api.put(
        "tcp-routes/db",
        tcp_route(backends=[{"service": "api", "weight": 9}, {"service": "api-v2", "weight": 1}]),
    )
    assert updated.status_code == 200
    assert (await api.client.delete("/v1/tcp-routes/db")).status_code == 204
    assert (await api.client.get("/v1/tcp-routes/db")).status_code == 404
    history = (await api.client.get("/v1/history", params={"kind": "TcpRoute"})).json()
    operations = [(e["kind"], e["name"], e["operation"]) for e in history["items"]]
    assert operations == [
        ("TcpRoute", "db", "delete"),
        ("TcpRoute", "db", "update"),
        ("TcpRoute", "db", "create"),
    ]


async def test_tls_routes_apply_as_yaml_and_list(api: Api) -> None:
    text = (
        "kind: TlsRoute\nname: shop\nspec:\n  listeners: [sni]\n"
        "  hostnames: [shop.example.com, '*.shop.example.com']\n  backends: [{service: web}]\n"
        "---\n"
        "kind: TlsRoute\nname: api\nspec:\n  listeners: [sni]\n"
        "  hostnames: [api.example.com]\n  backends: [{service: api}]\n"
    )
    response = await api.client.post("/v1/apply", content=text, headers=YAML)
    assert response.status_code == 200, response.text
    listed = (await api.client.get("/v1/tls-routes")).json()["items"]
    assert sorted(item["name"] for item in listed) == ["api", "shop"]


async def test_a_wildcard_and_a_name_it_covers_may_share_a_listener(api: Api) -> None:
    assert (await api.put("tls-routes/a", tls_route("a", ("*.example.com",)))).status_code == 201
    exact = await api.put("tls-routes/b", tls_route("b", ("a.example.com",)))
    assert exact.status_code == 201, exact.text


async def test_the_same_server_name_on_another_listener_is_accepted(api: Api) -> None:
    assert (await api.put("tls-routes/a", tls_route("a"))).status_code == 201
    other = await api.put("tls-routes/b", tls_route("b", listeners=("sni2",)))
    assert other.status_code == 201, other.text


async def test_a_server_name_another_route_of_the_listener_takes_is_refused(api: Api) -> None:
    assert await api.put("tls-routes/a", tls_route("a", ("x.example.com", "y.example.com")))
    problem = await refused(api, "tls-routes/b", tls_route("b", ("z.example.com", "y.example.com")))
    reason = reason_at(problem, "spec.hostnames[1]")
    assert "'a'" in reason and "y.example.com" in reason and "'sni'" in reason


async def test_a_tcp_route_on_an_http_or_tls_listener_is_refused(api: Api) -> None:
    for name in ("public", "sni"):
        problem = await refused(api, "tcp-routes/db", tcp_route(listeners=(name,)))
        assert "tcp listeners only" in reason_at(problem, "spec.listeners[0]")


async def test_a_tls_route_on_a_tcp_listener_is_refused(api: Api) -> None:
    problem = await refused(api, "tls-routes/shop", tls_route(listeners=("db",)))
    assert "tls listeners only" in reason_at(problem, "spec.listeners[0]")


async def test_an_http_route_on_a_tcp_or_tls_listener_is_refused(api: Api) -> None:
    for name, use in (("db", "TcpRoute"), ("sni", "TlsRoute")):
        problem = await refused(api, "routes/web", route(listeners=("public", name)))
        assert use in reason_at(problem, "spec.listeners[1]")


async def test_a_missing_listener_is_refused(api: Api) -> None:
    problem = await refused(api, "tcp-routes/db", tcp_route(listeners=("db", "nope")))
    assert "no listener 'nope'" in reason_at(problem, "spec.listeners[1]")


async def test_a_second_tcp_route_on_a_tcp_listener_is_refused(api: Api) -> None:
    assert (await api.put("tcp-routes/db", tcp_route())).status_code == 201
    problem = await refused(api, "tcp-routes/db2", tcp_route("db2"))
    assert "already has TcpRoute 'db'" in reason_at(problem, "spec.listeners[0]")


@pytest.mark.parametrize(
    ("hostname", "words"),
    [
        ("*", "not a server name"),
        ("Shop.example.com", "hostname"),
        ("*.*.example.com", "hostname"),
        ("a..example.com", "hostname"),
        ("shop.example.com:443", "hostname"),
    ],
)
async def test_bad_server_names_are_refused(api: Api, hostname: str, words: str) -> None:
    problem = await refused(api, "tls-routes/shop", tls_route(hostnames=(hostname,)))
    assert words in reason_at(problem, "spec.hostnames[0]")


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"backends": []}, "spec.backends", "at least one"),
        (
            {"backends": [{"service": "api", "weight": 0}, {"service": "web", "weight": 0}]},
            "spec.backends",
            "must not all be 0",
        ),
        (
            {"backends": [{"service": "api"}, {"service": "api"}]},
            "spec.backends",
            "more than once",
        ),
        ({"backends": [{"service": "api", "subset": "v2"}]}, "spec.backends[0].subset", "xtra"),
        ({"idle_timeout": "soon"}, "spec.idle_timeout", "duration"),
        ({"listeners": []}, "spec.listeners", "at least one"),
        ({"listeners": ["db", "db"]}, "spec.listeners", "more than once"),
        ({"hostnames": ["a.example.com"]}, "spec.hostnames", "xtra"),
    ],
)
async def test_bad_tcp_routes_are_refused(
    api: Api, spec: dict[str, Any], field: str, words: str
) -> None:
    document = tcp_route()
    document["spec"].update(spec)
    problem = await refused(api, "tcp-routes/db", document)
    assert words in reason_at(problem, field)


async def test_a_tls_route_needs_hostnames(api: Api) -> None:
    problem = await refused(api, "tls-routes/shop", tls_route(hostnames=()))
    assert "at least one" in reason_at(problem, "spec.hostnames")


@pytest.mark.parametrize(
    ("protocol", "spec", "named"),
    [
        ("tls", {"tls_policy": "edge"}, "tls_policy"),
        ("tcp", {"tls_policy": "edge"}, "tls_policy"),
        ("tcp", {"http": {"idle_timeout": "5s"}}, "http"),
        ("tcp", {"https_redirect": True}, "https_redirect"),
        ("tls", {"metrics": {}}, "metrics"),
        ("tls", {"telemetry": {"request_id": False}}, "telemetry"),
    ],
)
async def test_http_options_on_a_stream_listener_are_refused(
    api: Api, protocol: str, spec: dict[str, Any], named: str
) -> None:
    problem = await refused(api, "listeners/raw", listener("raw", 9100, protocol=protocol, **spec))
    reason = reason_at(problem, "spec")
    assert reason.startswith(named) and "http/https listeners only" in reason


async def test_a_backend_without_instances_is_accepted_with_a_warning(api: Api) -> None:
    response = await api.put("tcp-routes/db", tcp_route(backends=[{"service": "empty"}]))
    assert response.status_code == 201
    warnings = response.json()["warnings"]
    assert [w["field"] for w in warnings] == ["spec.backends[0].service"]
    assert "no instances" in warnings[0]["reason"]


async def test_a_stream_listener_without_a_route_is_accepted_with_a_warning(api: Api) -> None:
    response = await api.put("listeners/raw", listener("raw", 9100, protocol="tcp"))
    assert response.status_code == 201
    assert "no TcpRoute" in reason_at({"errors": response.json()["warnings"]}, "spec.protocol")


async def test_deleting_a_listener_a_stream_route_uses_is_a_conflict(api: Api) -> None:
    assert (await api.put("tcp-routes/db", tcp_route())).status_code == 201
    before = await api.revision()
    problem = assert_problem(await api.client.delete("/v1/listeners/db"), 409)
    assert {(e["kind"], e["name"]) for e in problem["errors"]} == {("TcpRoute", "db")}
    assert await api.revision() == before


async def test_stream_routes_are_listed_by_listener_service_and_hostname(api: Api) -> None:
    assert (await api.put("tcp-routes/db", tcp_route())).status_code == 201
    assert (await api.put("tls-routes/a", tls_route("a", ("a.example.com",)))).is_success
    second = tls_route("b", ("b.example.com",), ("sni2",))
    second["spec"]["backends"] = [{"service": "api"}]
    assert (await api.put("tls-routes/b", second)).is_success

    async def listed(query: str) -> list[str]:
        response = await api.client.get(f"/v1/{query}")
        assert response.status_code == 200, response.text
        return [item["name"] for item in response.json()["items"]]

    assert await listed("tcp-routes?listener=db") == ["db"]
    assert await listed("tcp-routes?service=web") == []
    assert await listed("tls-routes?listener=sni2") == ["b"]
    assert await listed("tls-routes?service=web") == ["a"]
    assert await listed("tls-routes?hostname=a.example.com") == ["a"]
