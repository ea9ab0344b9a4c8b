"""Requests reach the streams in a holder that gRPC keeps and the stream empties.

gRPC's request iterator keeps the last request it yielded until the next one arrives; a SotW
EDS ACK names every cluster, and its parsed message stayed alive per idle stream (issue 18:
memory after every endpoint set changed). The holder must hand over the message and keep
nothing, and still answer what the mTLS guard asks of a first request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from envoy.service.discovery.v3 import discovery_pb2

from tests.support.xds_client import node
from xds_server.cache.types import ENDPOINT
from xds_server.server.services import _Incoming, _taken


def _raw(with_node: bool = False) -> bytes:
    request = discovery_pb2.DiscoveryRequest(
        type_url=ENDPOINT, resource_names=[f"svc-{i}" for i in range(1000)]
    )
    if with_node:
        request.node.CopyFrom(node("n1"))
    return bytes(request.SerializeToString())


def test_taking_the_message_leaves_an_empty_holder() -> None:
    holder = _Incoming(discovery_pb2.DiscoveryRequest.FromString, _raw())
    message = holder.take()
    assert len(message.resource_names) == 1000
    assert holder._data == b"" and holder._message is None


def test_the_guard_reads_the_node_before_the_stream_takes_the_request() -> None:
    holder = _Incoming(discovery_pb2.DiscoveryRequest.FromString, _raw(with_node=True))
    assert holder.HasField("node") and holder.node.id == "n1"
    message = holder.take()  # parsed once, handed over
    assert message.node.id == "n1" and holder._message is None and holder._data == b""


async def test_the_stream_gets_messages_and_the_iterator_keeps_only_shells() -> None:
    holders = [_Incoming(discovery_pb2.DiscoveryRequest.FromString, _raw()) for _ in range(2)]

    async def from_grpc() -> AsyncIterator[_Incoming]:
        for holder in holders:
            yield holder

    taken = [len(m.resource_names) async for m in _taken(from_grpc())]
    assert taken == [1000, 1000]
    assert all(h._data == b"" and h._message is None for h in holders)
