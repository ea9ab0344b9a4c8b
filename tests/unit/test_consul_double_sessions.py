"""The Consul double's sessions, as Consul documents them (api-docs/session.mdx, kv.mdx
``acquire``/``release``, txn ``lock``/``unlock``/``check-session``)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.consul_double.server import AGENT_NODE, ConsulDouble

pytest_plugins = ["tests.consul_double.fixtures"]

SESSION_KEYS = {
    "ID",
    "Name",
    "Node",
    "LockDelay",
    "Behavior",
    "TTL",
    "NodeChecks",
    "ServiceChecks",
    "CreateIndex",
    "ModifyIndex",
}


@pytest.fixture
def http(consul_double: ConsulDouble) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=consul_double.url, timeout=10) as client:
        yield client


def create(http: httpx.Client, **body: Any) -> str:
    resp = http.put("/v1/session/create", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["ID"])


def entry(http: httpx.Client, key: str) -> dict[str, Any]:
    resp = http.get(f"/v1/kv/{key}")
    assert resp.status_code == 200, resp.text
    found: dict[str, Any] = resp.json()[0]
    return found


def test_create_defaults_info_list_node_and_destroy(http: httpx.Client) -> None:
    sid = create(http, Name="fleet")
    (info,) = http.get(f"/v1/session/info/{sid}").json()
    assert set(info) == SESSION_KEYS
    assert info["Node"] == AGENT_NODE
    assert info["Behavior"] == "release"
    assert info["LockDelay"] == 15_000_000_000
    assert info["NodeChecks"] == ["serfHealth"]
    assert info["TTL"] == ""
    assert [s["ID"] for s in http.get("/v1/session/list").json()] == [sid]
    assert [s["ID"] for s in http.get(f"/v1/session/node/{AGENT_NODE}").json()] == [sid]
    assert http.get("/v1/session/node/elsewhere").json() == []
    assert http.put(f"/v1/session/destroy/{sid}").json() is True
    assert http.get(f"/v1/session/info/{sid}").json() == []
    # Idempotent, as documented.
    assert http.put(f"/v1/session/destroy/{sid}").json() is True


def test_create_refuses_what_consul_refuses(http: httpx.Client) -> None:
    short = http.put("/v1/session/create", json={"TTL": "5s"})
    assert short.status_code == 500
    assert short.text.startswith("Invalid Session TTL '5000000000', must be between [10s=24h0m0s]")
    bad = http.put("/v1/session/create", json={"Behavior": "keep"})
    assert (bad.status_code, bad.text) == (500, "Invalid Behavior setting 'keep'")
    nowhere = http.put("/v1/session/create", json={"Node": "no-such-node"})
    assert nowhere.status_code == 500 and "Missing node registration" in nowhere.text
    gone = http.put("/v1/session/renew/6e8a4b0e-0000-0000-0000-000000000000")
    assert gone.status_code == 404
    assert gone.text == "Session id '6e8a4b0e-0000-0000-0000-000000000000' not found"


def test_acquire_release_lock_index_and_session_in_dir_entry(http: httpx.Client) -> None:
    one = create(http, LockDelay="0s")
    two = create(http, LockDelay="0s")
    assert http.put("/v1/kv/lock?acquire=" + one, content=b"a").json() is True
    first = entry(http, "lock")
    assert (first["Session"], first["LockIndex"]) == (one, 1)
    assert base64.b64decode(first["Value"]) == b"a"
    # The holder updates the value; LockIndex stays. Another session cannot take it.
    assert http.put("/v1/kv/lock?acquire=" + one, content=b"b").json() is True
    assert entry(http, "lock")["LockIndex"] == 1
    assert http.put("/v1/kv/lock?acquire=" + two, content=b"c").json() is False
    assert http.put("/v1/kv/lock?release=" + two).json() is False
    assert http.put("/v1/kv/lock?release=" + one, content=b"d").json() is True
    released = entry(http, "lock")
    assert "Session" not in released and released["LockIndex"] == 1
    assert http.put("/v1/kv/lock?acquire=" + two, content=b"e").json() is True
    assert entry(http, "lock")["LockIndex"] == 2
    unknown = http.put("/v1/kv/other?acquire=6e8a4b0e-0000-0000-0000-000000000000")
    assert unknown.status_code == 500
    assert unknown.text == 'invalid session "6e8a4b0e-0000-0000-0000-000000000000"'


def test_destroy_releases_or_deletes_per_behavior_and_sets_lock_delay(http: httpx.Client) -> None:
    keep = create(http)  # release, lock-delay 15s
    drop = create(http, Behavior="delete", LockDelay="0s")
    assert http.put("/v1/kv/kept?acquire=" + keep, content=b"x").json() is True
    assert http.put("/v1/kv/dropped?acquire=" + drop, content=b"y").json() is True
    http.put(f"/v1/session/destroy/{keep}")
    http.put(f"/v1/session/destroy/{drop}")
    kept = entry(http, "kept")
    assert "Session" not in kept and base64.b64decode(kept["Value"]) == b"x"
    assert http.get("/v1/kv/dropped").status_code == 404
    # The released key is under lock-delay: no session may take it for 15 s.
    other = create(http)
    assert http.put("/v1/kv/kept?acquire=" + other).json() is False
    # The deleted one had no lock-delay.
    assert http.put("/v1/kv/dropped?acquire=" + other).json() is True


def test_txn_lock_unlock_and_check_session(http: httpx.Client) -> None:
    sid = create(http, LockDelay="0s")
    value = base64.b64encode(b"v").decode()

    def txn(*ops: dict[str, Any]) -> httpx.Response:
        return http.put("/v1/txn", json=[{"KV": op} for op in ops])

    ok = txn({"Verb": "lock", "Key": "t/a", "Value": value, "Session": sid})
    assert ok.status_code == 200, ok.text
    assert ok.json()["Results"][0]["KV"]["Session"] == sid
    assert txn({"Verb": "check-session", "Key": "t/a", "Session": sid}).status_code == 200
    other = create(http, LockDelay="0s")
    held = txn({"Verb": "lock", "Key": "t/a", "Value": value, "Session": other})
    assert held.status_code == 409
    assert held.json()["Errors"][0]["What"] == 'failed to lock key "t/a", lock is already held'
    check = txn({"Verb": "check-session", "Key": "t/a", "Session": other})
    assert check.status_code == 409
    assert txn({"Verb": "unlock", "Key": "t/a", "Session": sid}).status_code == 200
    assert "Session" not in entry(http, "t/a")


async def test_a_ttl_session_not_renewed_is_invalidated_after_twice_its_ttl(
    consul_double_factory: Any,
) -> None:
    double: ConsulDouble = consul_double_factory(session_ttl_min=0.2, jitter=False)
    async with httpx.AsyncClient(base_url=double.url, timeout=10) as http:
        created = await http.put(
            "/v1/session/create", json={"TTL": "200ms", "Behavior": "delete", "LockDelay": "0s"}
        )
        sid = created.json()["ID"]
        put = await http.put(f"/v1/kv/fleet/r1?acquire={sid}", content=b"{}")
        assert put.json() is True
        # Renewed once: it lives on past its first deadline.
        renewed = await http.put(f"/v1/session/renew/{sid}")
        assert renewed.status_code == 200 and renewed.json()[0]["TTL"] == "200ms"
        started = time.monotonic()
        index = int((await http.get("/v1/kv/fleet/?recurse")).headers["X-Consul-Index"])
        # A blocking query on the prefix wakes when the session's keys are deleted.
        answer = await http.get(f"/v1/kv/fleet/?recurse&index={index}&wait=5s")
        waited = time.monotonic() - started
        assert answer.status_code == 404
        assert waited >= 0.4  # Consul's server arms its timer at TTL x 2
        assert (await http.get(f"/v1/session/info/{sid}")).json() == []
        assert (await http.put(f"/v1/session/renew/{sid}")).status_code == 404
