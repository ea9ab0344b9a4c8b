"""The fleet view's parts: the summaries a replica publishes (``status.fleet``), the ephemeral
keys under a Consul session (``consul.sessions``, against the Consul double), the prefix
follower, and what ``/v1/proxies`` shows of the other replicas."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from envoy.config.core.v3 import base_pb2
from fastapi import FastAPI

from tests.consul_double.server import ConsulDouble
from xds_server.admin.app import create_admin_app
from xds_server.admin.context import AdminContext
from xds_server.admin.proxy_views import ProxyView, remote_proxy_view
from xds_server.app import fleet_prefix
from xds_server.cache.types import CLUSTER, LISTENER
from xds_server.cli.serve import parse_serve
from xds_server.consul import ConsulKv, ConsulSettings, KvEntry
from xds_server.consul.kv import PrefixFollower
from xds_server.consul.sessions import EphemeralKeys, batches
from xds_server.model.inventory import Inventory
from xds_server.status import ProxyRegistry, StreamKind
from xds_server.status.fleet import (
    FleetSummaries,
    FleetView,
    Replica,
    decode_chunk,
    fleet_values,
)
from xds_server.store import MemoryStore

pytest_plugins = ["tests.consul_double.fixtures"]

HERE = Replica("replica-a", "127.0.0.1:18000")
THERE = Replica("replica-b", "127.0.0.1:18001")


def envoy_node(node_id: str, group: str) -> Any:
    node = base_pb2.Node(id=node_id, cluster=group, user_agent_name="envoy")
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.version.minor_number = 40
    return node


def grpc_node(node_id: str) -> Any:
    return base_pb2.Node(
        id=node_id,
        cluster="apps",
        user_agent_name="gRPC Python",
        user_agent_version="1.76.0",
        client_features=["xds.config.resource-in-sotw"],
    )


def registry_with(*names: str) -> ProxyRegistry:
    registry = ProxyRegistry()
    for name in names:
        node = envoy_node(name, "edge")
        proxy = registry.connect(
            name, "edge", "ipv4:127.0.0.1:1", "1.40.0", StreamKind.ADS_SOTW, node
        )
        cds = proxy.type_status(CLUSTER)
        cds.sent_version = cds.acked_version = "v1"
        cds.sent_nonce = "1"
        cds.acked_at = 1.0
        proxy.type_status(LISTENER)
    return registry


def test_the_user_agent_and_client_type_come_from_the_node() -> None:
    registry = ProxyRegistry()
    envoy = registry.connect(
        "e", "edge", "p", "1.40.0", StreamKind.ADS_SOTW, envoy_node("e", "edge")
    )
    app = registry.connect("g", "apps", "p", "1.76.0", StreamKind.ADS_SOTW, grpc_node("g"))
    assert (envoy.user_agent, envoy.client_type) == ("envoy 1.40.0", "envoy")
    assert (app.user_agent, app.client_type) == ("gRPC Python 1.76.0", "grpc")


def test_fleet_values_are_deterministic_chunked_and_only_of_connected_proxies() -> None:
    registry = registry_with(*(f"node-{n:03d}" for n in range(30)))
    gone = registry.get("node-029")
    assert gone is not None
    registry.disconnect(gone)
    values = fleet_values(registry.proxies(), HERE, chunk_bytes=2000)
    assert values == fleet_values(reversed(registry.proxies()), HERE, chunk_bytes=2000)
    assert len(values) > 1 and list(values) == sorted(values)
    assert all(len(zlib.decompress(v)) <= 2000 + 600 for v in values.values())
    found = [decode_chunk(v) for v in values.values()]
    ids = [p["node_id"] for chunk in found if chunk for p in chunk[2]]
    assert ids == [f"node-{n:03d}" for n in range(29)]
    first = found[0]
    assert first is not None and first[:2] == ("replica-a", "127.0.0.1:18000")
    summary = first[2][0]
    assert summary["user_agent"] == "envoy 1.40.0"
    assert summary["types"]["CDS"] == {
        "status": "SYNCED",
        "sent_version": "v1",
        "acked_version": "v1",
        "resources": 0,
        "last_nack": None,
    }
    # A replica without proxies still publishes itself.
    empty = fleet_values([], HERE)
    assert list(empty) == ["0000"] and decode_chunk(empty["0000"]) == ("replica-a", HERE.ads, [])
    # Compressed: 1,000 proxies fit in one chunk well under Consul's 512 KB per value.
    many = fleet_values(registry_with(*(f"n-{i:04d}" for i in range(1000))).proxies(), HERE)
    assert len(many) == 1 and len(many["0000"]) < 100 * 1024
    assert json.loads(zlib.decompress(many["0000"]))["replica"] == "replica-a"
    # Plain JSON is read too (what an operator might write by hand).
    assert decode_chunk(b'{"replica": "r", "proxies": []}') == ("r", "", [])


def test_the_fleet_view_keeps_the_other_replicas_proxies() -> None:
    view = FleetView(HERE)
    mine = fleet_values(registry_with("a-1").proxies(), HERE)
    theirs = fleet_values(registry_with("b-1", "b-2").proxies(), THERE)
    view.update(
        {
            **{f"x-fleet/replica-a/{k}": v for k, v in mine.items()},
            **{f"x-fleet/replica-b/{k}": v for k, v in theirs.items()},
            "x-fleet/junk/0000": b"not json",
        }
    )
    assert [p.node_id for p in view.remote()] == ["b-1", "b-2"]
    assert view.replicas() == {"replica-a", "replica-b"}
    remote = view.get("b-1")
    assert remote is not None and remote.replica == "replica-b"
    shown = remote_proxy_view(remote)
    ProxyView.model_validate(shown)  # the same shape as a local proxy's
    assert shown["replica"] == "replica-b" and shown["status"] == "NOT_SENT"  # LDS: not sent
    assert shown["types"]["CDS"]["type_url"] == CLUSTER
    view.update({})
    assert view.remote() == [] and view.replicas() == {"replica-a"}


async def test_proxies_lists_the_fleet_and_keeps_its_fields_without_one() -> None:
    registry = registry_with("a-1")
    fleet = FleetView(HERE)
    fleet.update({"f/replica-b/0000": fleet_values(registry_with("b-1").proxies(), THERE)["0000"]})
    store = MemoryStore()
    await store.open()
    try:
        for context_fleet, path in ((fleet, "fleet"), (None, "alone")):
            context = AdminContext(
                store=store, inventory=Inventory, proxies=registry, fleet=context_fleet
            )
            apps[path] = create_admin_app(context)
        async with api(apps["fleet"]) as http:
            items = (await http.get("/v1/proxies")).json()["items"]
            assert [(p["node_id"], p["replica"]) for p in items] == [
                ("a-1", "replica-a"),
                ("b-1", "replica-b"),
            ]
            assert (await http.get("/v1/proxies?connected=false")).json()["items"] == []
            one = await http.get("/v1/proxies/b-1")
            assert one.status_code == 200 and one.json()["replica"] == "replica-b"
            config = await http.get("/v1/proxies/b-1/config")
            assert config.status_code == 404 and "replica-b" in config.json()["detail"]
        async with api(apps["alone"]) as http:
            alone = (await http.get("/v1/proxies")).json()["items"]
            assert [(p["node_id"], p["replica"], p["user_agent"]) for p in alone] == [
                ("a-1", None, "envoy 1.40.0")
            ]
            assert (await http.get("/v1/proxies/b-1")).status_code == 404
    finally:
        await store.close()


apps: dict[str, FastAPI] = {}


def api(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


def test_batches_respect_the_size_and_operation_limits() -> None:
    ops = [(n, 100 * 1024) for n in range(7)]
    assert [len(b) for b in batches(ops)] == [3, 3, 1]
    assert [len(b) for b in batches([(n, 1) for n in range(300)])] == [128, 128, 44]


@pytest.fixture
async def kv(consul_double: ConsulDouble) -> AsyncIterator[ConsulKv]:
    async with ConsulKv(ConsulSettings.from_env({"CONSUL_HTTP_ADDR": consul_double.url})) as kv:
        yield kv


async def test_ephemeral_keys_write_only_changes_under_one_session(
    consul_double: ConsulDouble, kv: ConsulKv
) -> None:
    keys = EphemeralKeys(kv, "x-fleet/r1/", "fleet r1", ttl=10.0)
    txns = lambda: consul_double.request_count("/v1/txn")  # noqa: E731
    await keys.step({"0000": b"a", "0001": b"b"})
    assert (keys.writes, txns()) == (1, 1)
    (session,) = consul_double.sessions()
    assert session["TTL"] == "10s" and session["Behavior"] == "delete"
    assert session["LockDelay"] == 0
    entry = consul_double.kv_entry("x-fleet/r1/0000")
    assert entry is not None and entry["Session"] == session["ID"]
    await keys.step({"0000": b"a", "0001": b"b"})
    assert txns() == 1  # nothing changed: no write
    await keys.step({"0000": b"c"})
    assert txns() == 2
    assert consul_double.kv_get("x-fleet/r1/0000") == b"c"
    assert consul_double.kv_entry("x-fleet/r1/0001") is None
    written = [r for r in consul_double.requests("/v1/txn")][-1]
    assert written.method == "PUT"
    # The session is lost (destroyed, expired): a new one, and every key written again.
    async with httpx.AsyncClient(base_url=consul_double.url) as http:
        await http.put(f"/v1/session/destroy/{session['ID']}")
    assert consul_double.kv_entry("x-fleet/r1/0000") is None
    keys._renew_at = 0.0  # renewal due: it finds the session gone
    await keys.step({"0000": b"c"})
    (again,) = consul_double.sessions()
    assert again["ID"] != session["ID"]
    assert consul_double.kv_get("x-fleet/r1/0000") == b"c"
    # A clean shutdown destroys the session; Consul deletes its keys.
    await keys.close()
    assert consul_double.sessions() == []
    assert consul_double.kv_entry("x-fleet/r1/0000") is None


async def test_a_key_held_by_another_session_is_an_error_then_retried(
    consul_double: ConsulDouble, kv: ConsulKv
) -> None:
    first = EphemeralKeys(kv, "x-fleet/r1/", "fleet r1 (old)", ttl=10.0)
    await first.step({"0000": b"old"})
    second = EphemeralKeys(kv, "x-fleet/r1/", "fleet r1", ttl=10.0)
    with pytest.raises(Exception, match="lock is already held"):
        await second.step({"0000": b"new"})
    await first.close()
    await second.step({"0000": b"new"})
    assert consul_double.kv_get("x-fleet/r1/0000") == b"new"


async def test_the_prefix_follower_hands_over_every_change(
    consul_double: ConsulDouble, kv: ConsulKv
) -> None:
    seen: asyncio.Queue[list[KvEntry]] = asyncio.Queue()
    follower = PrefixFollower(kv, "x-fleet/", seen.put_nowait)
    task = asyncio.create_task(follower.run())
    try:
        assert await asyncio.wait_for(seen.get(), 10) == []
        keys = EphemeralKeys(kv, "x-fleet/r1/", "fleet r1", ttl=10.0)
        await keys.step({"0000": b"a"})
        (entry,) = await asyncio.wait_for(seen.get(), 10)
        assert (entry.key, entry.value) == ("x-fleet/r1/0000", b"a")
        assert entry.session == keys.session_id
        await keys.close()
        assert await asyncio.wait_for(seen.get(), 10) == []
    finally:
        task.cancel()


def test_summaries_are_encoded_again_only_after_a_proxy_event() -> None:
    registry = registry_with("a-1")
    summaries = FleetSummaries(registry, HERE)
    first = summaries.values()
    assert summaries.values() is first
    registry.connect("a-2", "edge", "p", "1.40.0", StreamKind.ADS_SOTW, envoy_node("a-2", "edge"))
    second = summaries.values()
    assert second is not first and b'"a-2"' in zlib.decompress(second["0000"])


def test_the_fleet_flags_and_their_variables() -> None:
    default = parse_serve([], environ={})
    assert (default.fleet_ttl, default.fleet_interval, default.replica_id) == (10.0, 1.0, None)
    flags = parse_serve(["--fleet-ttl", "30s", "--replica-id", "east-1"], environ={})
    assert (flags.fleet_ttl, flags.replica_id) == (30.0, "east-1")
    env = parse_serve(
        [],
        environ={
            "XDS_SERVER_FLEET_TTL": "15s",
            "XDS_SERVER_REPLICA_ID": "west-2",
            "XDS_SERVER_FLEET_INTERVAL": "500ms",
        },
    )
    assert (env.fleet_ttl, env.replica_id, env.fleet_interval) == (15.0, "west-2", 0.5)
    assert fleet_prefix(dataclasses.replace(env, store="consul-kv:/xds/config/")) == (
        "xds/config-fleet/"
    )
