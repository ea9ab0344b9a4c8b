"""Snapshot: content versions, shared encodings, consistency checks, cache watches."""

from __future__ import annotations

import asyncio

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from tests.support import resources as r
from xds_server.cache import consistency, encoding
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE


def test_version_is_a_hash_of_content() -> None:
    a = Snapshot.build([r.cluster("web"), r.endpoints("web", 1)])
    b = Snapshot.build([r.endpoints("web", 1), r.cluster("web")])
    c = Snapshot.build([r.cluster("web"), r.endpoints("web", 2)])
    assert a.of_type(CLUSTER)["web"].version == b.of_type(CLUSTER)["web"].version
    assert a.version(ENDPOINT) == b.version(ENDPOINT)
    assert a.version(ENDPOINT) != c.version(ENDPOINT)
    assert a.version(CLUSTER) == c.version(CLUSTER)


def test_pre_encoded_response_parses_like_protobuf() -> None:
    snap = r.snapshot()
    resources = list(snap.of_type(CLUSTER).values()) + list(snap.of_type(ENDPOINT).values())
    data = encoding.sotw_response("v1", CLUSTER, "7", b"".join(x.sotw_field for x in resources))
    parsed = discovery_pb2.DiscoveryResponse.FromString(data)
    assert parsed.version_info == "v1"
    assert parsed.nonce == "7"
    assert parsed.type_url == CLUSTER
    assert [p.value for p in parsed.resources] == [x.body for x in resources]

    delta = encoding.delta_response("v2", ENDPOINT, "8", resources[1].delta_field, ["gone"])
    parsed_delta = discovery_pb2.DeltaDiscoveryResponse.FromString(delta)
    assert parsed_delta.resources[0].name == "web"
    assert parsed_delta.resources[0].version == resources[1].version
    assert parsed_delta.resources[0].resource.value == resources[1].body
    assert list(parsed_delta.removed_resources) == ["gone"]


def test_unchanged_resources_are_reused_from_the_previous_snapshot() -> None:
    first = r.snapshot(ports=(1,))
    second = Snapshot.build(
        [
            r.cluster("web"),
            r.endpoints("web", 2),
            r.listener("http", 10000, "http"),
            r.route_config("http", "web"),
        ],
        previous=first,
    )
    assert second.of_type(CLUSTER)["web"] is first.of_type(CLUSTER)["web"]
    assert second.of_type(ENDPOINT)["web"] is not first.of_type(ENDPOINT)["web"]


def test_consistency_finds_every_dangling_reference() -> None:
    snap = Snapshot.build(
        [r.cluster("a"), r.listener("l", 1, "missing-route"), r.route_config("r", "missing")]
    )
    found = consistency.problems(snap)
    assert any("cluster 'a' has no endpoints" in p for p in found)
    assert any("missing route configuration 'missing-route'" in p for p in found)
    assert any("missing cluster 'missing'" in p for p in found)
    assert consistency.problems(r.snapshot()) == []


def test_consistency_checks_secrets() -> None:
    from envoy.config.core.v3 import base_pb2
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    context = tls_pb2.UpstreamTlsContext()
    context.common_tls_context.tls_certificate_sds_secret_configs.add(name="client-cert")
    cluster = r.cluster("a")
    cluster.transport_socket.CopyFrom(base_pb2.TransportSocket(name="envoy.transport_sockets.tls"))
    cluster.transport_socket.typed_config.Pack(context)
    snap = Snapshot.build([cluster, r.endpoints("a", 1)])
    assert consistency.problems(snap) == ["cluster 'a' uses missing secret 'client-cert'"]
    ok = Snapshot.build([cluster, r.endpoints("a", 1), r.secret("client-cert")])
    assert consistency.problems(ok) == []


async def test_cache_refuses_an_inconsistent_snapshot_and_keeps_the_old() -> None:
    cache = SnapshotCache()
    good = r.snapshot()
    cache.set_snapshots(good)
    with pytest.raises(consistency.InconsistentSnapshot):
        cache.set_snapshots(Snapshot.build([r.cluster("orphan")]))
    assert cache.snapshot_for("any") is good


async def test_watchers_wake_once_for_a_burst_and_see_the_latest() -> None:
    cache = SnapshotCache()
    start = cache.state.generation
    waiter = asyncio.create_task(cache.wait_for_change(start))
    for port in range(1, 6):
        cache.set_snapshots(r.snapshot(ports=(port,)))
    state = await asyncio.wait_for(waiter, 1)
    assert state.generation == start + 5
    assert "web" in state.snapshot_for("g").of_type(ENDPOINT)


def test_group_snapshots_override_the_default() -> None:
    cache = SnapshotCache()
    edge = r.snapshot(listener_name="edge")
    cache.set_snapshots(r.snapshot(), {"edge": edge})
    assert cache.snapshot_for("edge") is edge
    assert "http" in cache.snapshot_for("other").of_type(LISTENER)
    assert "edge" in cache.snapshot_for("edge").of_type(ROUTE)
