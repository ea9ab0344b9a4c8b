"""Malformed and hostile requests end their own stream with a gRPC status, nothing more."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import XdsHarness
from tests.support import resources as r
from tests.support.xds_client import DELTA_ADS, SOTW_ADS, DeltaClient, SotwClient, names_of, node
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER


async def _healthy_stream_still_works(xds: XdsHarness, survivor: SotwClient) -> None:
    """A stream opened before the abuse still gets pushes afterwards."""
    xds.cache.set_snapshots(r.snapshot(ports=(4242,)))
    response = await survivor.recv()
    assert response.type_url == ENDPOINT


async def _survivor(xds: XdsHarness) -> SotwClient:
    xds.cache.set_snapshots(r.snapshot())
    survivor = SotwClient(xds.channel)
    await survivor.request(ENDPOINT, ["web"], node_=node("survivor"))
    await survivor.ack(await survivor.recv(), ["web"])
    return survivor


async def test_unknown_type_url(xds: XdsHarness) -> None:
    survivor = await _survivor(xds)
    client = SotwClient(xds.channel)
    await client.request("type.googleapis.com/not.a.Type", node_=node("bad"))
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT
    await _healthy_stream_still_works(xds, survivor)
    survivor.cancel()


async def test_no_node_on_the_first_request(xds: XdsHarness) -> None:
    survivor = await _survivor(xds)
    client = SotwClient(xds.channel)
    await client.request(CLUSTER)
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT
    delta = DeltaClient(xds.channel)
    await delta.request(CLUSTER)
    assert await delta.status() == grpc.StatusCode.INVALID_ARGUMENT
    await _healthy_stream_still_works(xds, survivor)
    survivor.cancel()


async def test_a_hundred_thousand_names(xds: XdsHarness) -> None:
    survivor = await _survivor(xds)
    client = SotwClient(xds.channel)
    await client.request(ENDPOINT, [f"c{i}" for i in range(100_000)], node_=node("greedy"))
    assert await client.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
    delta = DeltaClient(xds.channel)
    await delta.request(ENDPOINT, [f"c{i}" for i in range(100_000)], node_=node("greedy2"))
    assert await delta.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await _healthy_stream_still_works(xds, survivor)
    survivor.cancel()


async def test_garbage_nonce(xds: XdsHarness) -> None:
    survivor = await _survivor(xds)
    client = SotwClient(xds.channel)
    await client.request(CLUSTER, node_=node("g"))
    await client.recv()
    await client.request(CLUSTER, nonce="\x00\xff garbage \U0001f4a5")
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT
    await _healthy_stream_still_works(xds, survivor)
    survivor.cancel()


async def test_undecodable_bytes(xds: XdsHarness) -> None:
    survivor = await _survivor(xds)
    call: Any = xds.channel.stream_stream(SOTW_ADS, request_serializer=lambda b: b)()
    await call.write(b"\xff\xff\xff\xff not protobuf")
    try:
        await call.read()
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INTERNAL
    await _healthy_stream_still_works(xds, survivor)
    survivor.cancel()


def _requests() -> st.SearchStrategy[discovery_pb2.DiscoveryRequest]:
    text = st.text(max_size=40)
    type_urls = st.sampled_from([CLUSTER, ENDPOINT, LISTENER, "", "x", "type.googleapis.com/"])
    return st.builds(
        lambda type_url, names, version, nonce, with_node, node_id, err: _request(
            type_url, names, version, nonce, with_node, node_id, err
        ),
        type_urls,
        st.lists(text, max_size=5),
        text,
        st.one_of(st.just(""), st.integers(0, 5).map(str), text),
        st.booleans(),
        text,
        st.one_of(st.none(), text),
    )


def _request(type_url, names, version, nonce, with_node, node_id, err):  # type: ignore[no-untyped-def]
    request = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=names, version_info=version, response_nonce=nonce
    )
    if with_node:
        request.node.CopyFrom(node(node_id))
    if err is not None:
        request.error_detail.message = err
    return request


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(sequence=st.lists(_requests(), min_size=1, max_size=6), delta=st.booleans())
async def test_fuzzed_streams_never_hurt_the_server(
    xds: XdsHarness, sequence: list[discovery_pb2.DiscoveryRequest], delta: bool
) -> None:
    survivor = await _survivor(xds)
    fuzzed: Any = xds.channel.stream_stream(
        DELTA_ADS if delta else SOTW_ADS, request_serializer=lambda b: b
    )()
    for request in sequence:
        data = request.SerializeToString()
        if delta:  # reinterpret the same fields as a delta request (a different schema)
            data = discovery_pb2.DeltaDiscoveryRequest(
                type_url=request.type_url,
                resource_names_subscribe=request.resource_names,
                response_nonce=request.response_nonce,
                node=request.node if request.HasField("node") else None,
            ).SerializeToString()
        try:
            await fuzzed.write(data)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            break  # the server ended the stream: that is an allowed outcome
    fuzzed.cancel()
    await _healthy_stream_still_works(xds, survivor)
    survivor.cancel()
    # The server still serves a fresh, well-behaved client.
    client = SotwClient(xds.channel)
    await client.request(CLUSTER, node_=node("after-fuzz"))
    assert names_of(await client.recv()) == ["web"]
    client.cancel()
