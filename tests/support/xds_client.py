"""A minimal xDS client over grpc.aio for protocol tests (what Envoy would send)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SOTW_ADS = ADS + "StreamAggregatedResources"
DELTA_ADS = ADS + "DeltaAggregatedResources"


def node(node_id: str = "test-node", group: str = "default") -> Any:
    return base_pb2.Node(id=node_id, cluster=group)


class StreamClient:
    """One bidirectional xDS stream; responses are read with a timeout."""

    def __init__(self, channel: grpc.aio.Channel, method: str, delta: bool) -> None:
        request_type = (
            discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
        )
        response_type = (
            discovery_pb2.DeltaDiscoveryResponse if delta else discovery_pb2.DiscoveryResponse
        )
        self.call: Any = channel.stream_stream(
            method,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )()

    async def send(self, request: Any) -> None:
        await self.call.write(request)

    async def recv(self, timeout: float = 5.0) -> Any:
        response = await asyncio.wait_for(self.call.read(), timeout)
        if response is grpc.aio.EOF:
            raise EOFError("stream ended")
        return response

    async def status(self, timeout: float = 5.0) -> grpc.StatusCode:
        """Read until the server ends the stream; return its status code."""
        try:
            while True:
                response = await asyncio.wait_for(self.call.read(), timeout)
                if response is grpc.aio.EOF:
                    break
        except grpc.aio.AioRpcError as error:
            return error.code()
        return await asyncio.wait_for(self.call.code(), timeout)

    def cancel(self) -> None:
        self.call.cancel()


class SotwClient(StreamClient):
    def __init__(self, channel: grpc.aio.Channel, method: str = SOTW_ADS) -> None:
        super().__init__(channel, method, delta=False)

    async def request(
        self,
        type_url: str,
        names: Iterable[str] = (),
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
        node_: Any = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            version_info=version,
            response_nonce=nonce,
        )
        if node_ is not None:
            request.node.CopyFrom(node_)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.send(request)

    async def ack(self, response: Any, names: Iterable[str] = ()) -> None:
        await self.request(
            response.type_url, names, version=response.version_info, nonce=response.nonce
        )

    async def nack(
        self, response: Any, message: str, names: Iterable[str] = (), version: str = ""
    ) -> None:
        await self.request(
            response.type_url, names, version=version, nonce=response.nonce, error=message
        )


class DeltaClient(StreamClient):
    def __init__(self, channel: grpc.aio.Channel, method: str = DELTA_ADS) -> None:
        super().__init__(channel, method, delta=True)

    async def request(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        *,
        nonce: str = "",
        error: str | None = None,
        initial: dict[str, str] | None = None,
        node_: Any = None,
    ) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=initial or {},
        )
        if node_ is not None:
            request.node.CopyFrom(node_)
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.send(request)

    async def ack(self, response: Any) -> None:
        await self.request(response.type_url, nonce=response.nonce)


def names_of(response: Any) -> list[str]:
    """Names of the resources in a SotW or delta response."""
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return [r.name for r in response.resources]
    from google.protobuf import symbol_database

    from xds_server.cache.snapshot import resource_name

    found = []
    for packed in response.resources:
        message_type = symbol_database.Default().GetSymbol(packed.type_url.split("/")[-1])
        message = message_type()
        packed.Unpack(message)
        found.append(resource_name(message))
    return found
