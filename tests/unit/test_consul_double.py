"""Tests of the Consul HTTP API double (tests/consul_double), incl. with py-consul's client.

The samples in /work/shared/consul/ are the responses printed in Consul's API docs; the double
must answer the same shape (and the same values for the same registered data).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import consul.aio
import httpx
import pytest
import trustme

from tests.consul_double.server import AGENT_NODE, ConsulDouble

pytest_plugins = ["tests.consul_double.fixtures"]

SAMPLES = Path("/work/shared/consul")
INDEXES = {"CreateIndex", "ModifyIndex"}
REPO_ROOT = Path(__file__).resolve().parents[2]


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture
def http(consul_double: ConsulDouble) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=consul_double.url, timeout=10) as client:
        yield client


def index_of(resp: httpx.Response) -> int:
    return int(resp.headers["X-Consul-Index"])


# -- shapes compared with the docs' samples --------------------------------------------------


def _redis_registration() -> dict[str, Any]:
    """The data behind health-service.json, as a PUT /v1/catalog/register body."""
    entry = sample("health-service.json")[0]
    node, svc = entry["Node"], entry["Service"]
    return {
        "Datacenter": node["Datacenter"],
        "ID": node["ID"],
        "Node": node["Node"],
        "Address": node["Address"],
        "TaggedAddresses": node["TaggedAddresses"],
        "NodeMeta": node["Meta"],
        "Service": {k: svc[k] for k in svc if k != "Namespace"},
        "Checks": [
            {k: c[k] for k in ("Node", "CheckID", "Name", "Status", "Notes", "ServiceID")}
            for c in entry["Checks"]
        ],
    }


def test_health_service_matches_docs_sample_key_for_key_and_value_for_value(
    http: httpx.Client,
) -> None:
    assert http.put("/v1/catalog/register", json=_redis_registration()).json() is True

    resp = http.get("/v1/health/service/redis")

    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    [want] = sample("health-service.json")
    [got] = resp.json()
    assert set(got) == set(want)
    for part in ("Node", "Service"):
        assert set(got[part]) == set(want[part]) | INDEXES, part
        assert {k: v for k, v in got[part].items() if k not in INDEXES} == want[part]
    got_checks = {c["CheckID"]: c for c in got["Checks"]}
    want_checks = {c["CheckID"]: c for c in want["Checks"]}
    assert set(got_checks) == set(want_checks)
    for check_id, want_check in want_checks.items():
        got_check = got_checks[check_id]
        assert set(got_check) == set(want_check) | INDEXES
        assert {k: v for k, v in got_check.items() if k not in INDEXES} == want_check
        assert got_check["ModifyIndex"] == index_of(resp)


def test_catalog_services_matches_docs_sample(
    consul_double: ConsulDouble, http: httpx.Client
) -> None:
    # A real cluster always lists "consul" (the servers' own service); so does the double.
    consul_double.register("redis", "10.0.0.1", 6379)
    consul_double.register("postgresql", "10.0.0.2", 5432, tags=["primary"])
    consul_double.register("postgresql", "10.0.0.3", 5432, tags=["secondary"])

    resp = http.get("/v1/catalog/services")

    assert resp.json() == sample("catalog-services.json")
    assert index_of(resp) == consul_double.index()


def test_kv_get_matches_docs_sample_shape(consul_double: ConsulDouble, http: httpx.Client) -> None:
    assert http.put("/v1/kv/zip", content=b"test").json() is True

    resp = http.get("/v1/kv/zip")

    [want] = sample("kv-key.json")
    [got] = resp.json()
    # Session is `omitempty` in Consul and only present while a session holds the lock.
    assert set(got) == set(want) - {"Session"}
    assert got["Key"] == want["Key"] and got["Value"] == want["Value"] == "dGVzdA=="
    assert got["Flags"] == 0 and got["LockIndex"] == 0
    assert got["CreateIndex"] == got["ModifyIndex"] == index_of(resp) == consul_double.index()


def test_read_headers_are_present_on_every_read(http: httpx.Client) -> None:
    for path in (
        "/v1/catalog/services",
        "/v1/catalog/nodes",
        "/v1/catalog/service/consul",
        "/v1/health/service/consul",
        "/v1/health/state/any",
        "/v1/health/checks/consul",
        f"/v1/health/node/{AGENT_NODE}",
    ):
        resp = http.get(path)
        assert resp.status_code == 200, path
        assert int(resp.headers["X-Consul-Index"]) >= 1, path
        assert resp.headers["X-Consul-KnownLeader"] == "true", path
        assert resp.headers["X-Consul-LastContact"] == "0", path


def test_catalog_service_and_nodes_endpoints(
    consul_double: ConsulDouble, http: httpx.Client
) -> None:
    consul_double.register("web", "10.0.0.1", 80, node="n1", node_address="192.168.0.1")

    [entry] = http.get("/v1/catalog/service/web").json()
    nodes = {n["Node"]: n for n in http.get("/v1/catalog/nodes").json()}

    assert entry["Node"] == "n1" and entry["Address"] == "192.168.0.1"
    assert entry["ServiceAddress"] == "10.0.0.1" and entry["ServicePort"] == 80
    assert entry["ServiceWeights"] == {"Passing": 1, "Warning": 1}
    assert set(nodes) == {AGENT_NODE, "n1"}
    assert http.get("/v1/catalog/datacenters").json() == ["dc1"]


# -- registration through the agent and the catalog ------------------------------------------


def test_agent_registration_defaults_follow_consul(http: httpx.Client) -> None:
    body = {
        "Name": "api",
        "ID": "api-1",
        "Port": 9000,
        "Tags": ["v1"],
        "Checks": [
            {"TTL": "10s"},
            {"HTTP": "http://127.0.0.1:9000/health", "Interval": "5s", "Status": "passing"},
        ],
    }
    assert http.put("/v1/agent/service/register", json=body).status_code == 200

    [entry] = http.get("/v1/health/service/api").json()

    assert entry["Node"]["Node"] == AGENT_NODE and entry["Node"]["Address"] == "127.0.0.1"
    assert entry["Service"]["Address"] == ""  # empty: clients use the node's address
    checks = {c["CheckID"]: c for c in entry["Checks"]}
    assert set(checks) == {"serfHealth", "service:api-1:1", "service:api-1:2"}
    assert checks["service:api-1:1"]["Status"] == "critical"  # no Status given
    assert checks["service:api-1:2"]["Status"] == "passing"
    assert checks["service:api-1:1"]["Name"] == "Service 'api' check"
    assert checks["service:api-1:1"]["ServiceTags"] == ["v1"]


def test_agent_check_updates_and_maintenance(http: httpx.Client) -> None:
    body = {"Name": "api", "Check": {"CheckID": "api-ttl", "TTL": "10s"}}
    http.put("/v1/agent/service/register", json=body)

    def statuses() -> dict[str, str]:
        [entry] = http.get("/v1/health/service/api").json()
        return {c["CheckID"]: c["Status"] for c in entry["Checks"]}

    assert http.put("/v1/agent/check/pass/api-ttl", params={"note": "fine"}).status_code == 200
    assert statuses()["api-ttl"] == "passing"
    assert http.put("/v1/agent/check/warn/api-ttl").status_code == 200
    assert statuses()["api-ttl"] == "warning"
    http.put("/v1/agent/check/update/api-ttl", json={"Status": "critical", "Output": "down"})
    assert statuses()["api-ttl"] == "critical"
    assert http.put("/v1/agent/check/pass/serfHealth").status_code == 404  # not a TTL check

    http.put("/v1/agent/service/maintenance/api", params={"enable": "true", "reason": "deploy"})
    [entry] = http.get("/v1/health/service/api").json()
    maint = {c["CheckID"]: c for c in entry["Checks"]}["_service_maintenance:api"]
    assert maint["Status"] == "critical" and maint["Notes"] == "deploy"
    http.put("/v1/agent/service/maintenance/api", params={"enable": "false"})
    assert "_service_maintenance:api" not in statuses()

    http.put("/v1/agent/maintenance", params={"enable": "True"})  # py-consul sends True
    assert statuses()["_node_maintenance"] == "critical"
    http.put("/v1/agent/maintenance", params={"enable": "false"})
    assert http.put("/v1/agent/service/deregister/api").status_code == 200
    assert http.get("/v1/health/service/api").json() == []


def test_catalog_register_check_default_status_and_deregister_forms(
    consul_double: ConsulDouble, http: httpx.Client
) -> None:
    body = {
        "Node": "n1",
        "Address": "10.0.0.9",
        "Service": {"Service": "db", "ID": "db1", "Port": 5432},
        "Check": {"Name": "db check", "ServiceID": "db1"},
    }
    http.put("/v1/catalog/register", json=body)
    [entry] = http.get("/v1/health/service/db").json()
    assert entry["Checks"][0]["CheckID"] == "db check"  # CheckID defaults to Name
    assert entry["Checks"][0]["Status"] == "critical"  # no Status: critical
    assert entry["Node"]["TaggedAddresses"] is None  # nil map, as Consul renders it

    http.put("/v1/catalog/deregister", json={"Node": "n1", "CheckID": "db check"})
    assert http.get("/v1/health/service/db").json()[0]["Checks"] == []
    http.put("/v1/catalog/deregister", json={"Node": "n1", "ServiceID": "db1"})
    assert http.get("/v1/health/service/db").json() == []
    http.put("/v1/catalog/deregister", json={"Node": "n1"})
    assert "n1" not in {n["Node"] for n in http.get("/v1/catalog/nodes").json()}

    bad = {"Node": "n2", "Address": "1.2.3.4", "Check": {"Name": "x", "ServiceID": "nope"}}
    before = consul_double.index()
    assert http.put("/v1/catalog/register", json=bad).status_code == 500
    assert consul_double.index() == before  # atomic: nothing applied
    assert http.put("/v1/catalog/register", json={"Address": "1.2.3.4"}).status_code == 400


# -- filters -----------------------------------------------------------------------------------


def test_passing_tag_and_dc_filters(consul_double_factory: Any) -> None:
    double: ConsulDouble = consul_double_factory(datacenters=("dc1", "dc2"))
    double.register("web", "10.0.0.1", 80, tags=["v1", "Primary"], status="passing")
    double.register("web", "10.0.0.2", 80, tags=["v1"], status="warning")
    double.register("web", "10.0.0.3", 80, tags=["v2"], status="critical")
    double.register("web", "10.1.0.1", 80, dc="dc2")
    with httpx.Client(base_url=double.url) as http:

        def addresses(**params: Any) -> set[str]:
            resp = http.get("/v1/health/service/web", params=params)
            assert resp.status_code == 200, resp.text
            return {e["Service"]["Address"] for e in resp.json()}

        assert addresses() == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
        assert addresses(passing="1") == {"10.0.0.1"}
        assert addresses(passing="") == {"10.0.0.1"}  # present without value means true
        assert addresses(passing="false") == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
        assert addresses(tag="v1") == {"10.0.0.1", "10.0.0.2"}
        assert addresses(tag=["v1", "primary"]) == {"10.0.0.1"}  # all tags, case-insensitive
        assert addresses(dc="dc2") == {"10.1.0.1"}
        assert addresses(filter='"v2" in Service.Tags') == {"10.0.0.3"}
        assert addresses(filter='Service.Address == "10.0.0.2" and "v1" in Service.Tags') == {
            "10.0.0.2"
        }
        assert http.get("/v1/health/service/web", params={"passing": "maybe"}).status_code == 400
        unsupported = http.get("/v1/health/service/web", params={"filter": "a or b"})
        assert unsupported.status_code == 400
        unknown = http.get("/v1/health/service/web", params={"dc": "dc9"})
        assert (unknown.status_code, unknown.text) == (500, "No path to datacenter")
        assert http.get("/v1/catalog/datacenters").json() == ["dc1", "dc2"]


def test_datacenters_have_separate_state_and_indexes(consul_double_factory: Any) -> None:
    double: ConsulDouble = consul_double_factory(datacenters=("dc1", "dc2"), local_dc="dc2")
    double.kv_put("k", "in-dc2")
    double.kv_put("k", "in-dc1", dc="dc1")
    double.kv_put("k2", "x", dc="dc1")
    with httpx.Client(base_url=double.url) as http:
        local = http.get("/v1/kv/k").json()[0]
        remote = http.get("/v1/kv/k", params={"dc": "dc1"}).json()[0]
        assert base64.b64decode(local["Value"]) == b"in-dc2"
        assert base64.b64decode(remote["Value"]) == b"in-dc1"
        assert http.get("/v1/kv/k2").status_code == 404
        assert double.index("dc1") != double.index("dc2")
        assert http.get("/v1/agent/self").json()["Config"]["Datacenter"] == "dc2"


# -- blocking queries --------------------------------------------------------------------------


async def test_blocking_health_query_wakes_on_own_service_only(consul_double: ConsulDouble) -> None:
    consul_double.register("web", "10.0.0.1", 80, id="web1")
    consul_double.register("api", "10.0.0.2", 80, id="api1")
    async with httpx.AsyncClient(base_url=consul_double.url, timeout=30) as http:
        web_index = index_of(await http.get("/v1/health/service/web"))
        api_index = index_of(await http.get("/v1/health/service/api"))
        web = asyncio.create_task(
            http.get("/v1/health/service/web", params={"index": web_index, "wait": "20s"})
        )
        await consul_double.wait_for_blocked_async("/v1/health/service/web")

        consul_double.set_check("api1", "critical")
        # The change is visible (an api query with the old index returns at once) ...
        api = await http.get("/v1/health/service/api", params={"index": api_index, "wait": "20s"})
        assert index_of(api) > api_index
        # ... and the web query is still parked: another service's change does not wake it.
        assert not web.done()
        assert consul_double.blocked_count("/v1/health/service/web") == 1

        consul_double.set_check("web1", "warning")
        resp = await asyncio.wait_for(web, 10)
        assert index_of(resp) > web_index
        assert resp.json()[0]["Checks"][-1]["Status"] == "warning"


async def test_blocking_query_times_out_with_the_same_index(consul_double: ConsulDouble) -> None:
    consul_double.jitter = False
    consul_double.register("web", "10.0.0.1", 80)
    async with httpx.AsyncClient(base_url=consul_double.url, timeout=30) as http:
        first = await http.get("/v1/health/service/web")
        started = time.monotonic()
        again = await http.get(
            "/v1/health/service/web", params={"index": index_of(first), "wait": "300ms"}
        )
        elapsed = time.monotonic() - started
    assert index_of(again) == index_of(first)
    assert again.json() == first.json()
    assert 0.29 <= elapsed < 5


async def test_blocking_jitter_stays_within_wait_over_16(consul_double: ConsulDouble) -> None:
    async with httpx.AsyncClient(base_url=consul_double.url, timeout=30) as http:
        index = index_of(await http.get("/v1/catalog/services"))
        started = time.monotonic()
        await http.get("/v1/catalog/services", params={"index": index, "wait": "160ms"})
    assert 0.159 <= time.monotonic() - started < 0.17 + 1.0  # wait + <=10ms jitter + slack


def test_blocking_param_errors(http: httpx.Client) -> None:
    assert http.get("/v1/catalog/services", params={"index": "x"}).text == "Invalid index"
    resp = http.get("/v1/catalog/services", params={"index": "1", "wait": "10"})
    assert (resp.status_code, resp.text) == (400, "Invalid wait time")


async def test_catalog_services_index_ignores_check_changes(consul_double: ConsulDouble) -> None:
    consul_double.register("web", "10.0.0.1", 80, id="web1")
    async with httpx.AsyncClient(base_url=consul_double.url, timeout=30) as http:
        index = index_of(await http.get("/v1/catalog/services"))
        waiting = asyncio.create_task(
            http.get("/v1/catalog/services", params={"index": index, "wait": "20s"})
        )
        await consul_double.wait_for_blocked_async("/v1/catalog/services")
        consul_double.set_check("web1", "critical")
        health = await http.get("/v1/health/service/web")
        assert index_of(health) > index  # the write happened ...
        assert not waiting.done()  # ... but no service registration changed
        consul_double.register("api", "10.0.0.2", 80)
        resp = await asyncio.wait_for(waiting, 10)
        assert "api" in resp.json() and index_of(resp) > index


def test_index_rules_for_idempotent_writes_nodes_and_extinction(
    consul_double: ConsulDouble,
) -> None:
    consul_double.register("web", "10.0.0.1", 80, id="web1", node="n1")
    consul_double.register("api", "10.0.0.2", 80, id="api1", node="n2")
    web, api, raft = (
        consul_double.service_index("web"),
        consul_double.service_index("api"),
        consul_double.index(),
    )
    consul_double.register("web", "10.0.0.1", 80, id="web1", node="n1")  # same data again
    assert consul_double.index() == raft + 1  # a write was applied ...
    assert consul_double.service_index("web") == web  # ... but nothing changed

    consul_double.set_node_health("n1", "critical")  # node-level check of web's node
    assert consul_double.service_index("web") > web
    assert consul_double.service_index("api") == api

    consul_double.deregister("api1")
    gone = consul_double.service_index("api")
    assert gone == consul_double.index()  # extinction index
    assert consul_double.health("api") == []


async def test_kv_blocking_key_and_prefix(consul_double: ConsulDouble) -> None:
    consul_double.kv_put("app/a", "1")
    consul_double.kv_put("app/b", "2")
    consul_double.kv_put("other", "3")
    async with httpx.AsyncClient(base_url=consul_double.url, timeout=30) as http:
        tree = await http.get("/v1/kv/app/", params={"recurse": ""})
        tree_index = index_of(tree)
        assert tree_index == consul_double.index() - 1  # max ModifyIndex under the prefix

        waiting = asyncio.create_task(
            http.get("/v1/kv/app/", params={"recurse": "", "index": tree_index, "wait": "20s"})
        )
        await consul_double.wait_for_blocked_async("/v1/kv/app/")
        consul_double.kv_put("other", "4")
        other = await http.get("/v1/kv/other")
        assert index_of(other) > tree_index
        assert not waiting.done()  # a key outside the prefix does not move its index

        consul_double.kv_delete("app/b")  # deleting the newest key still moves it forward
        resp = await asyncio.wait_for(waiting, 10)
        assert index_of(resp) > tree_index
        assert [e["Key"] for e in resp.json()] == ["app/a"]

        missing = await http.get("/v1/kv/nope")
        assert missing.status_code == 404 and index_of(missing) == consul_double.index()


# -- KV and transactions -----------------------------------------------------------------------


def test_kv_cas_flags_keys_raw_and_delete(http: httpx.Client) -> None:
    assert http.put("/v1/kv/k", params={"cas": 0}, content=b"v1").json() is True
    assert http.put("/v1/kv/k", params={"cas": 0}, content=b"v2").json() is False
    modify = http.get("/v1/kv/k").json()[0]["ModifyIndex"]
    assert http.put("/v1/kv/k", params={"cas": modify + 1}, content=b"v2").json() is False
    assert http.put("/v1/kv/k", params={"cas": modify, "flags": 42}, content=b"v2").json()
    entry = http.get("/v1/kv/k").json()[0]
    assert base64.b64decode(entry["Value"]) == b"v2" and entry["Flags"] == 42
    assert entry["CreateIndex"] == modify < entry["ModifyIndex"]
    assert http.get("/v1/kv/k", params={"raw": ""}).content == b"v2"

    assert http.delete("/v1/kv/k", params={"cas": 0}).json() is False  # 0 never deletes
    assert http.delete("/v1/kv/k", params={"cas": entry["ModifyIndex"]}).json() is True
    assert http.get("/v1/kv/k").status_code == 404

    for key in ("web/a", "web/sub/b", "web/sub/c", "webx"):
        http.put(f"/v1/kv/{key}", content=b"")
    assert http.get("/v1/kv/web/a").json()[0]["Value"] is None  # empty body is stored as nil
    keys = http.get("/v1/kv/web/", params={"keys": "", "separator": "/"}).json()
    assert keys == ["web/a", "web/sub/"]
    assert http.delete("/v1/kv/web/", params={"recurse": ""}).json() is True
    assert http.get("/v1/kv/", params={"keys": ""}).json() == ["webx"]
    assert http.put("/v1/kv/", content=b"x").status_code == 400


def _kv_op(verb: str, key: str, value: bytes | None = None, index: int = 0) -> dict[str, Any]:
    op: dict[str, Any] = {"Verb": verb, "Key": key, "Index": index}
    if value is not None:
        op["Value"] = base64.b64encode(value).decode()
    return {"KV": op}


def test_txn_is_atomic_and_shaped_like_the_docs(
    consul_double: ConsulDouble, http: httpx.Client
) -> None:
    consul_double.kv_put("c", "old")
    c_index = consul_double.kv_entry("c")["ModifyIndex"]  # type: ignore[index]

    failed = http.put(
        "/v1/txn",
        json=[
            _kv_op("set", "a", b"1"),
            _kv_op("set", "b", b"2"),
            _kv_op("check-index", "c", index=c_index + 9),
        ],
    )
    assert failed.status_code == 409
    assert failed.json()["Results"] is None
    assert [e["OpIndex"] for e in failed.json()["Errors"]] == [2]
    assert consul_double.kv_get("a") is None and consul_double.kv_get("b") is None

    ok = http.put(
        "/v1/txn",
        json=[
            _kv_op("set", "a", b"1"),
            _kv_op("cas", "c", b"new", index=c_index),
            _kv_op("get", "c"),
            _kv_op("check-not-exists", "zzz"),
        ],
    )
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["Errors"] is None
    results = [r["KV"] for r in body["Results"]]
    assert [r["Key"] for r in results] == ["a", "c", "c"]
    assert results[0]["Value"] is None  # only get/get-tree return values
    assert base64.b64decode(results[2]["Value"]) == b"new"
    assert results[0]["ModifyIndex"] == results[1]["ModifyIndex"]  # one Raft entry

    stale = http.put("/v1/txn", json=[_kv_op("cas", "c", b"x", index=c_index)])
    assert stale.status_code == 409 and "index is stale" in stale.json()["Errors"][0]["What"]
    http.put("/v1/txn", json=[_kv_op("delete-tree", "")])
    assert http.get("/v1/kv/", params={"recurse": ""}).status_code == 404


# -- ACL and TLS -------------------------------------------------------------------------------


async def test_acl_token_is_required_in_any_of_consuls_places(consul_double_factory: Any) -> None:
    double: ConsulDouble = consul_double_factory(acl_token="s3cret")
    async with httpx.AsyncClient(base_url=double.url) as http:
        missing = await http.get("/v1/catalog/services")
        wrong = await http.get("/v1/catalog/services", headers={"X-Consul-Token": "nope"})
        assert (missing.status_code, missing.text) == (403, "Permission denied")
        assert (wrong.status_code, wrong.text) == (403, "ACL not found")
        for headers, params in (
            ({"X-Consul-Token": "s3cret"}, {}),
            ({"Authorization": "Bearer s3cret"}, {}),
            ({}, {"token": "s3cret"}),
        ):
            resp = await http.get("/v1/catalog/services", headers=headers, params=params)
            assert resp.status_code == 200
        assert (await http.get("/v1/catalog/datacenters")).status_code == 200  # needs no ACL
    async with consul.aio.Consul(host="127.0.0.1", port=double.port, token="s3cret") as client:
        _, services = await client.catalog.services()
        assert "consul" in services
    async with consul.aio.Consul(host="127.0.0.1", port=double.port) as anonymous:
        with pytest.raises(consul.ACLPermissionDenied):
            await anonymous.catalog.services()
    assert double.tokens_seen["s3cret"] == 4
    assert double.tokens_seen["nope"] == 1


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_with_trustme(
    consul_double_factory: Any, tls_ca: trustme.CA, tmp_path: Path
) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    double: ConsulDouble = consul_double_factory(ssl_context=server_ctx)
    assert double.url.startswith("https://127.0.0.1:")
    client_ctx = ssl.create_default_context()
    tls_ca.configure_trust(client_ctx)
    async with httpx.AsyncClient(base_url=double.url, verify=client_ctx) as http:
        assert (await http.get("/v1/catalog/services")).status_code == 200
    async with httpx.AsyncClient(base_url=double.url) as untrusting:
        with pytest.raises(httpx.ConnectError):
            await untrusting.get("/v1/catalog/services")
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    async with consul.aio.Consul(
        host="127.0.0.1", port=double.port, scheme="https", verify=str(ca_file)
    ) as client:
        assert await client.kv.put("tls", "yes") is True


# -- faults ------------------------------------------------------------------------------------


def test_fail_next_n_then_until_heal(consul_double: ConsulDouble, http: httpx.Client) -> None:
    consul_double.fail(503, "rpc error: boom", count=2)
    assert [http.get("/v1/catalog/services").status_code for _ in range(3)] == [503, 503, 200]
    consul_double.fail(500, path_prefix="/v1/kv/")
    assert http.get("/v1/catalog/services").status_code == 200
    assert [http.get("/v1/kv/x").status_code for _ in range(3)] == [500, 500, 500]
    consul_double.heal()
    assert http.get("/v1/kv/x").status_code == 404


async def test_hang_holds_requests_until_heal(consul_double: ConsulDouble) -> None:
    consul_double.hang()
    async with httpx.AsyncClient(base_url=consul_double.url, timeout=30) as http:
        pending = asyncio.create_task(http.get("/v1/catalog/services"))
        await consul_double.wait_for_requests_async("/v1/catalog/services")
        assert not pending.done()
        assert consul_double.connections == 1 and consul_double.inflight == 1
        consul_double.heal()
        assert (await asyncio.wait_for(pending, 10)).status_code == 200


def test_refuse_then_accept_connections_on_the_same_port(
    consul_double: ConsulDouble, http: httpx.Client
) -> None:
    port = consul_double.port
    assert http.get("/v1/status/leader").status_code == 200
    consul_double.refuse_connections()
    with httpx.Client(base_url=consul_double.url) as fresh, pytest.raises(httpx.ConnectError):
        fresh.get("/v1/status/leader")
    consul_double.accept_connections()
    assert consul_double.port == port
    with httpx.Client(base_url=consul_double.url) as fresh:
        assert fresh.get("/v1/status/leader").json() == "127.0.0.1:8300"


async def test_refuse_drops_open_blocking_queries(consul_double: ConsulDouble) -> None:
    async with httpx.AsyncClient(base_url=consul_double.url, timeout=30) as http:
        index = index_of(await http.get("/v1/catalog/services"))
        pending = asyncio.create_task(
            http.get("/v1/catalog/services", params={"index": index, "wait": "20s"})
        )
        await consul_double.wait_for_blocked_async("/v1/catalog/services")
        consul_double.refuse_connections()
        with pytest.raises(httpx.TransportError):
            await asyncio.wait_for(pending, 10)
        await consul_double.wait_for_async(lambda: consul_double.inflight == 0)
    consul_double.heal()


async def test_reset_index_goes_backwards_and_wakes_blocked_queries(
    consul_double: ConsulDouble,
) -> None:
    for port in range(20):
        consul_double.register("web", "10.0.0.1", port)
    async with httpx.AsyncClient(base_url=consul_double.url, timeout=30) as http:
        index = index_of(await http.get("/v1/health/service/web"))
        pending = asyncio.create_task(
            http.get("/v1/health/service/web", params={"index": index, "wait": "20s"})
        )
        await consul_double.wait_for_blocked_async("/v1/health/service/web")
        consul_double.reset_index(to=5)
        resp = await asyncio.wait_for(pending, 10)
        assert index_of(resp) <= 5 < index  # the client must notice and reset to 0
        consul_double.register("api", "10.0.0.2", 80)
        assert consul_double.index() == 6


def test_lose_leader_fails_like_consul(consul_double: ConsulDouble, http: httpx.Client) -> None:
    consul_double.lose_leader()
    resp = http.get("/v1/catalog/services")
    assert (resp.status_code, resp.text) == (500, "No cluster leader")
    stale = http.get("/v1/catalog/services", params={"stale": ""})
    assert stale.status_code == 200 and stale.headers["X-Consul-KnownLeader"] == "false"
    assert http.put("/v1/kv/k", content=b"v").status_code == 500
    assert http.get("/v1/status/leader").json() == ""
    consul_double.heal()
    assert http.get("/v1/catalog/services").headers["X-Consul-KnownLeader"] == "true"


# -- instrumentation ---------------------------------------------------------------------------


async def test_concurrency_high_water_marks(consul_double: ConsulDouble) -> None:
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=3)
    async with httpx.AsyncClient(base_url=consul_double.url, timeout=30, limits=limits) as http:
        index = index_of(await http.get("/v1/catalog/services"))
        consul_double.reset_stats()
        tasks = [
            asyncio.create_task(
                http.get("/v1/catalog/services", params={"index": index, "wait": "20s"})
            )
            for _ in range(8)
        ]
        await consul_double.wait_for_blocked_async("/v1/catalog/services", 3)
        consul_double.register("web", "10.0.0.1", 80)  # wakes them; the rest follow
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert consul_double.request_count("/v1/catalog/services", "GET") == 8
    assert consul_double.max_inflight == 3
    assert consul_double.max_connections == 3
    assert consul_double.max_connections_by_client == {"127.0.0.1": 3}
    assert consul_double.max_inflight_by_client == {"127.0.0.1": 3}
    assert consul_double.requests("/v1/catalog/services")[0].param("wait") == "20s"


async def test_connections_over_the_per_client_limit_are_closed(consul_double_factory: Any) -> None:
    double: ConsulDouble = consul_double_factory(max_conns_per_client=2)
    async with httpx.AsyncClient(base_url=double.url, timeout=30) as http:
        index = index_of(await http.get("/v1/catalog/services"))
        params: dict[str, str | int] = {"index": index, "wait": "20s"}
        parked = [
            asyncio.create_task(http.get("/v1/catalog/services", params=params)) for _ in range(2)
        ]
        await double.wait_for_blocked_async("/v1/catalog/services", 2)
        with pytest.raises(httpx.TransportError):
            await http.get("/v1/status/leader")  # needs a third connection
        assert double.rejected_connections == 1
        assert double.max_connections_by_client == {"127.0.0.1": 2}
        double.register("web", "10.0.0.1", 80)
        assert all(r.status_code == 200 for r in await asyncio.gather(*parked))


def test_wait_for_requests_from_another_thread(consul_double: ConsulDouble) -> None:
    with pytest.raises(TimeoutError):
        consul_double.wait_for_requests("/v1/kv/", 1, timeout=0.05)

    def client() -> None:
        with httpx.Client(base_url=consul_double.url) as http:
            for _ in range(3):
                http.get("/v1/kv/x")

    worker = threading.Thread(target=client)
    worker.start()
    consul_double.wait_for_requests("/v1/kv/", 3, method="GET", timeout=10)
    worker.join()
    assert consul_double.request_count("/v1/kv/x") == 3


# -- py-consul, the production client ----------------------------------------------------------


async def test_py_consul_aio_client(consul_double: ConsulDouble) -> None:
    consul_double.register("web", "10.0.0.1", 80, id="web1", tags=["v1"])
    async with consul.aio.Consul(host="127.0.0.1", port=consul_double.port) as client:
        index, services = await client.catalog.services()
        assert services == {"consul": [], "web": ["v1"]}

        index, nodes = await client.health.service("web", passing=True)
        assert [n["Service"]["ID"] for n in nodes] == ["web1"]
        pending = asyncio.create_task(client.health.service("web", index=index, wait="20s"))
        await consul_double.wait_for_blocked_async("/v1/health/service/web")
        assert consul_double.requests("/v1/health/service/web")[-1].param("index") == index
        consul_double.set_check("web1", "critical")
        new_index, nodes = await asyncio.wait_for(pending, 10)
        assert int(new_index) > int(index)
        assert nodes[0]["Checks"][-1]["Status"] == "critical"
        assert (await client.health.service("web", passing=True))[1] == []

        assert await client.kv.put("config/x", "1") is True
        assert await client.kv.put("config/x", "2", cas=0) is False
        _, entry = await client.kv.get("config/x")
        assert entry["Value"] == b"1"
        _, missing = await client.kv.get("config/none")
        assert missing is None

        check = consul.Check.ttl("10s")
        assert await client.agent.service.register("api", service_id="api1", port=9, check=check)
        assert await client.agent.check.ttl_pass("service:api1")
        _, api = await client.health.service("api", passing=True)
        assert [n["Service"]["ID"] for n in api] == ["api1"]
        assert await client.catalog.register("n9", "10.9.9.9", service={"Service": "db"})
        assert await client.catalog.deregister("n9", service_id="db")
        assert await client.agent.service.maintenance("api1", True, reason="deploy")
        assert (await client.health.service("api", passing=True))[1] == []


# -- scale and standalone ----------------------------------------------------------------------


def test_seed_many_services_quickly(consul_double: ConsulDouble, http: httpx.Client) -> None:
    started = time.monotonic()
    names = consul_double.seed(services=2000, instances=5)
    assert time.monotonic() - started < 10
    assert len(names) == 2000
    services = http.get("/v1/catalog/services").json()
    assert len(services) == 2001  # plus "consul"
    entries = http.get(f"/v1/health/service/{names[42]}", params={"passing": "1"}).json()
    assert len(entries) == 5
    assert len({e["Node"]["Node"] for e in entries}) == 5


def test_standalone_process_prints_its_url(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.consul_double",
            "--port",
            "0",
            "--dc",
            "dc1",
            "--dc",
            "dc2",
            "--token",
            "T",
            "--seed-services",
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening http://127.0.0.1:")
        url = line.split(" ", 1)[1]
        with httpx.Client(base_url=url, headers={"X-Consul-Token": "T"}) as http:
            assert len(http.get("/v1/catalog/services").json()) == 4
            assert http.get("/v1/catalog/datacenters").json() == ["dc1", "dc2"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_locality_is_registered_and_answered_as_consul_does(
    consul_double: ConsulDouble, http: httpx.Client
) -> None:
    """Consul 1.17+'s service `Locality`: omitted from health entries when unset, rendered
    with only its non-empty keys, `ServiceLocality` in the catalog, inherited by sidecars."""
    body = {
        "Name": "api",
        "ID": "api-1",
        "Port": 9000,
        "Locality": {"Region": "us-east-1", "Zone": "us-east-1a"},
        "Connect": {"SidecarService": {}},
    }
    assert http.put("/v1/agent/service/register", json=body).status_code == 200
    consul_double.register("api", "10.0.0.2", 9000, locality={"Zone": "b"})
    consul_double.register("plain", "10.0.0.3", 80)
    entries = {e["Service"]["ID"]: e for e in http.get("/v1/health/service/api").json()}
    assert entries["api-1"]["Service"]["Locality"] == {"Region": "us-east-1", "Zone": "us-east-1a"}
    assert entries["api-10.0.0.2-9000"]["Service"]["Locality"] == {"Zone": "b"}
    [plain] = http.get("/v1/health/service/plain").json()
    assert "Locality" not in plain["Service"]
    catalog = {e["ServiceID"]: e for e in http.get("/v1/catalog/service/api").json()}
    assert catalog["api-1"]["ServiceLocality"] == {"Region": "us-east-1", "Zone": "us-east-1a"}
    assert http.get("/v1/catalog/service/plain").json()[0]["ServiceLocality"] is None
    [sidecar] = http.get("/v1/health/connect/api").json()
    assert sidecar["Service"]["Locality"] == {"Region": "us-east-1", "Zone": "us-east-1a"}
    bad = {"Name": "x", "Locality": {"Zone": 3}}
    assert http.put("/v1/agent/service/register", json=bad).status_code == 400


def test_health_state_filters_on_documented_check_selectors_only(
    consul_double: ConsulDouble, http: httpx.Client
) -> None:
    """health.mdx lists the selectors of /v1/health/state/:state; ModifyIndex is not one, so
    Consul refuses it (and bexpr has no `>` at all) — the double too."""
    consul_double.register("web", "10.0.0.1", 8080, id="web-1")
    consul_double.register("web", "10.0.0.2", 8080, id="web-2", node="n2")
    consul_double.set_check("web-2", "critical")
    failing = http.get("/v1/health/state/any", params={"filter": 'Status != "passing"'})
    assert failing.status_code == 200
    assert [(c["CheckID"], c["Status"]) for c in failing.json()] == [("service:web-2", "critical")]
    refused = http.get("/v1/health/state/any", params={"filter": 'ModifyIndex == "5"'})
    assert refused.status_code == 400
    assert 'Selector "ModifyIndex" is not valid' in refused.text
    assert http.get("/v1/health/state/any", params={"filter": "ModifyIndex > 5"}).status_code == 400


def test_a_filtered_blocking_health_state_wakes_on_any_check_write(
    consul_double: ConsulDouble, http: httpx.Client
) -> None:
    """The index is the checks table's; the filter applies to the answer (blocking.mdx: a
    return is no guarantee of a change)."""
    consul_double.register("web", "10.0.0.1", 8080, id="web-1")
    params = {"filter": 'Status != "passing"'}
    first = http.get("/v1/health/state/any", params=params)
    result: list[httpx.Response] = []
    waiter = threading.Thread(
        target=lambda: result.append(
            http.get(
                "/v1/health/state/any",
                params={**params, "index": str(index_of(first)), "wait": "5s"},
            )
        )
    )
    waiter.start()
    consul_double.wait_for_blocked("/v1/health/state/any")
    consul_double.register("web", "10.0.0.2", 8080, id="web-2", node="n2")  # passing check
    waiter.join(10)
    assert result and result[0].json() == []
    assert index_of(result[0]) > index_of(first)
    assert consul_double.bytes_sent("/v1/health/state/any") == len(first.content) + 2
