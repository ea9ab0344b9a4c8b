"""One node, several SotW streams: the record of what it was sent and ACKed stays true.

grpcio (1.85, gRFC A71) opens one ADS stream per channel target, all with the same node, so
a process with channels to ``xds:///a`` and ``xds:///b`` subscribes CDS by name on two
streams at once and the server answers each with its own version. The proxy's record
(``ProxyStatus.types``) is one per node and type: scripted here with two streams, the ACK
of the first stream's response arriving after the second stream's send used to be
recorded as an ACK of the second's (both nonces were "1"), and the record said STALE
forever: an ACK "whose acked version differs from the version sent with that nonce".
"""

from __future__ import annotations

import asyncio
from typing import Any

from envoy.config.core.v3 import base_pb2

from tests.conftest import XdsHarness
from tests.support import resources as r
from tests.support.xds_client import SotwClient, names_of
from xds_server.cache.snapshot import EMPTY_SNAPSHOT, Snapshot
from xds_server.cache.types import CLUSTER
from xds_server.status import ProxyEvent, ProxyEventKind, SyncStatus, TypeStatus


def grpc_node(node_id: str) -> Any:
    """A node as grpcio describes itself (it is served the gRPC snapshot)."""
    return base_pb2.Node(
        id=node_id,
        user_agent_name="gRPC Python",
        client_features=["xds.config.resource-in-sotw"],
    )


def grpc_snapshot(xds: XdsHarness) -> None:
    resources = [r.cluster("a"), r.cluster("b"), r.endpoints("a", 1), r.endpoints("b", 2)]
    xds.cache.set_snapshots(EMPTY_SNAPSHOT, grpc=Snapshot.build(resources))


def cds_record(xds: XdsHarness, node_id: str) -> TypeStatus:
    proxy = xds.registry.get(node_id)
    assert proxy is not None
    return proxy.types[CLUSTER]


class Replies:
    """Counts the ACKs and NACKs the server records, so a test can wait for them."""

    def __init__(self, xds: XdsHarness) -> None:
        self.count = 0
        self._changed = asyncio.Event()
        xds.registry.observe(self._seen)

    def _seen(self, event: ProxyEvent) -> None:
        if event.kind in (ProxyEventKind.ACK, ProxyEventKind.NACK):
            self.count += 1
            self._changed.set()

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(5):
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()


async def test_an_earlier_streams_late_ack_does_not_pair_with_a_later_send(
    xds: XdsHarness,
) -> None:
    grpc_snapshot(xds)
    replies = Replies(xds)
    first, second = SotwClient(xds.channel), SotwClient(xds.channel)
    await first.request(CLUSTER, ["a"], node_=grpc_node("app-1"))
    to_first = await first.recv()
    await second.request(CLUSTER, ["b"], node_=grpc_node("app-1"))
    to_second = await second.recv()
    assert names_of(to_first) == ["a"] and names_of(to_second) == ["b"]
    assert to_first.version_info != to_second.version_info

    await second.ack(to_second, ["b"])
    await replies.wait(1)
    await first.ack(to_first, ["a"])  # the late one: it answers an earlier response
    await replies.wait(2)

    proxy = xds.registry.get("app-1")
    assert proxy is not None and proxy.streams == 2
    record = proxy.types[CLUSTER]
    assert (record.sent_nonce, record.sent_version) == (to_second.nonce, to_second.version_info)
    assert record.acked_version == to_second.version_info
    assert record.status is SyncStatus.SYNCED
    assert to_first.nonce != to_second.nonce  # one nonce, one response, whatever the stream
    first.cancel()
    second.cancel()


async def test_a_nack_names_the_version_its_own_stream_sent(xds: XdsHarness) -> None:
    grpc_snapshot(xds)
    replies = Replies(xds)
    first, second = SotwClient(xds.channel), SotwClient(xds.channel)
    await first.request(CLUSTER, ["a"], node_=grpc_node("app-2"))
    to_first = await first.recv()
    await second.request(CLUSTER, ["b"], node_=grpc_node("app-2"))
    to_second = await second.recv()
    await first.nack(to_first, "cluster a: unsupported", ["a"])
    await replies.wait(1)

    proxy = xds.registry.get("app-2")
    assert proxy is not None
    nack = proxy.types[CLUSTER].last_nack
    assert nack is not None
    assert (nack.nonce, nack.version) == (to_first.nonce, to_first.version_info)
    # The record holds the second stream's response, which nobody refused (yet).
    assert proxy.types[CLUSTER].status is SyncStatus.STALE
    assert to_second.nonce == proxy.types[CLUSTER].sent_nonce
    first.cancel()
    second.cancel()


async def test_one_stream_growing_its_names_gets_each_set_and_acks_it(xds: XdsHarness) -> None:
    """The by-name path on one stream (what a gRPC channel does as it subscribes): a request
    sent before the first response is stale and ignored; the ACK that names both clusters
    is answered with both, and the record pairs each ACK with its own response."""
    grpc_snapshot(xds)
    replies = Replies(xds)
    client = SotwClient(xds.channel)
    await client.request(CLUSTER, ["a"], node_=grpc_node("app-3"))
    await client.request(CLUSTER, ["a", "b"])  # no nonce yet: stale, ignored
    only_a = await client.recv()
    assert names_of(only_a) == ["a"]
    await client.ack(only_a, ["a", "b"])
    both = await client.recv()
    assert names_of(both) == ["a", "b"]
    await replies.wait(1)
    assert cds_record(xds, "app-3").acked_version == only_a.version_info
    assert cds_record(xds, "app-3").status is SyncStatus.STALE  # ``both`` not ACKed yet
    await client.ack(both, ["a", "b"])
    await replies.wait(2)
    record = cds_record(xds, "app-3")
    assert (record.sent_version, record.acked_version) == (both.version_info,) * 2
    assert record.status is SyncStatus.SYNCED
    client.cancel()
