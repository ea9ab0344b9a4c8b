"""Proxyless gRPC clients are recognised from their node and served the gRPC snapshot
(``CacheState.grpc``), never their group's Envoy one; by name, as gRPC subscribes."""

from __future__ import annotations

import asyncio

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2

from tests.conftest import XdsHarness
from tests.support import resources as r
from tests.support.xds_client import SotwClient, names_of
from xds_server.cache.clients import ClientType, client_type
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import CLUSTER, LISTENER

GRPC_NODE = base_pb2.Node(
    id="app-1",
    cluster="default",
    user_agent_name="gRPC Python",
    user_agent_version="1.85.3",
    client_features=["envoy.lb.does_not_support_overprovisioning", "xds.config.resource-in-sotw"],
)


def grpc_snapshot(*services: str) -> Snapshot:
    """Like ``translate.proxyless``: a listener named after each service, no address."""
    messages = []
    for name in services:
        messages += [
            r.cluster(name),
            r.endpoints(name, 50051),
            listener_pb2.Listener(name=name),
        ]
    return Snapshot.build(messages)


def test_client_type_from_the_node() -> None:
    assert client_type(GRPC_NODE) is ClientType.GRPC
    assert client_type(base_pb2.Node(id="x", user_agent_name="grpc-node-js")) is ClientType.GRPC
    features_only = base_pb2.Node(id="x", client_features=["xds.config.resource-in-sotw"])
    assert client_type(features_only) is ClientType.GRPC
    # Envoy announces envoy.lb.does_not_support_overprovisioning too (as Envoy 1.40 does).
    envoy_features = [
        "envoy.config.require-any-fields-contain-struct",
        "envoy.lb.does_not_support_overprovisioning",
        "envoy.restart_features.use_eds_cache_for_ads",
    ]
    envoy = base_pb2.Node(id="e", user_agent_name="envoy", client_features=envoy_features)
    assert client_type(envoy) is ClientType.ENVOY
    assert client_type(base_pb2.Node(id="e", client_features=envoy_features)) is ClientType.ENVOY
    assert client_type(None) is ClientType.ENVOY


def test_the_cache_keeps_the_grpc_snapshot_beside_the_groups() -> None:
    cache = SnapshotCache()
    envoy, grpc = r.snapshot(), grpc_snapshot("echo")
    cache.set_snapshots(envoy, {"g": envoy}, grpc=grpc)
    assert cache.snapshot_for("g") is envoy
    assert cache.snapshot_for("g", client=ClientType.GRPC) is grpc
    assert cache.snapshot_for("other", client=ClientType.GRPC) is grpc
    cache.set_snapshots(r.snapshot(cluster_name="api"))  # no grpc given: kept
    assert cache.snapshot_for("g", client=ClientType.GRPC) is grpc


async def test_a_grpc_client_gets_its_listeners_by_name_and_envoy_its_group(
    xds: XdsHarness,
) -> None:
    xds.cache.set_snapshots(r.snapshot(), grpc=grpc_snapshot("echo", "api"))
    client = SotwClient(xds.channel)
    await client.request(LISTENER, ["echo"], node_=GRPC_NODE)
    response = await client.recv()
    assert names_of(response) == ["echo"]
    # It grows its name list one subscription at a time: the answer holds all it names.
    await client.ack(response, ["echo", "api"])
    response = await client.recv()
    assert sorted(names_of(response)) == ["api", "echo"]
    await client.ack(response, ["echo", "api"])
    await client.request(CLUSTER, ["api"])
    clusters = await client.recv()
    assert names_of(clusters) == ["api"]
    client.cancel()
    envoy = SotwClient(xds.channel)
    await envoy.request(LISTENER, node_=base_pb2.Node(id="envoy-1", cluster="default"))
    assert names_of(await envoy.recv()) == ["http"]
    envoy.cancel()


async def test_a_grpc_stream_wakes_when_the_grpc_snapshot_changes(xds: XdsHarness) -> None:
    envoy = r.snapshot()
    xds.cache.set_snapshots(envoy, grpc=grpc_snapshot("echo"))
    client = SotwClient(xds.channel)
    await client.request(LISTENER, ["echo", "api"], node_=GRPC_NODE)
    first = await client.recv()
    assert names_of(first) == ["echo"]
    await client.ack(first, ["echo", "api"])
    xds.cache.set_snapshots(envoy, grpc=grpc_snapshot("echo", "api"))  # Envoy's unchanged
    update = await asyncio.wait_for(client.recv(), 5)
    assert sorted(names_of(update)) == ["api", "echo"]
    client.cancel()
