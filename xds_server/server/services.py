"""The gRPC services: ADS (SotW and delta) and the per-type CDS/EDS/LDS/RDS/SDS services.

All of them are one core (:class:`SotwStream` / :class:`DeltaStream`) restricted to a set of
types. Handlers are registered generically so responses can be pre-serialised bytes that
gRPC sends as they are, instead of messages re-encoded for every stream.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from xds_server.cache import encoding
from xds_server.cache.clients import client_type
from xds_server.cache.snapshot import set_version
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SECRET
from xds_server.server.delta import DeltaStream
from xds_server.server.errors import StreamError
from xds_server.server.limits import StreamLimits
from xds_server.server.sotw import SotwStream
from xds_server.server.stream import XdsStream
from xds_server.status import ProxyRegistry

log = logging.getLogger("xds_server.server")

DiscoveryRequest = discovery_pb2.DiscoveryRequest
DeltaDiscoveryRequest = discovery_pb2.DeltaDiscoveryRequest

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

#: Per-type services: (service, method suffix, type URL).
PER_TYPE_SERVICES: tuple[tuple[str, str, str], ...] = (
    ("envoy.service.cluster.v3.ClusterDiscoveryService", "Clusters", CLUSTER),
    ("envoy.service.endpoint.v3.EndpointDiscoveryService", "Endpoints", ENDPOINT),
    ("envoy.service.listener.v3.ListenerDiscoveryService", "Listeners", LISTENER),
    ("envoy.service.route.v3.RouteDiscoveryService", "Routes", ROUTE),
    ("envoy.service.secret.v3.SecretDiscoveryService", "Secrets", SECRET),
)


def _identity(data: bytes) -> bytes:
    return data


class _Outgoing:
    """A response on its way out. gRPC keeps the last message a stream yielded until the
    next one; an idle stream would keep its last response alive (a whole state of the
    world, per stream). gRPC copies the bytes when it serialises, so the serialiser takes
    them out and gRPC keeps only this empty shell."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _take(outgoing: _Outgoing) -> bytes:
    data, outgoing.data = outgoing.data, b""
    return data


class _Incoming:
    """A request on its way in. gRPC's request iterator keeps the last request it yielded
    until the next one arrives, and an idle stream's last request is often its biggest: a
    SotW EDS ACK names every cluster, and its parsed message (a protobuf arena with a
    thousand names, ~70 KB) stayed alive per stream after every endpoint change. gRPC is
    handed this holder instead; the stream takes the message out, leaving an empty shell.

    The mTLS guard (``tls.AdsTls``) reads the node of a stream's first request before the
    stream does: ``HasField`` and ``node`` parse it then (once)."""

    __slots__ = ("_data", "_message", "_parse")

    def __init__(self, parse: Callable[[bytes], Any], data: bytes) -> None:
        self._parse = parse
        self._data = data
        self._message: Any = None

    def _peek(self) -> Any:
        if self._message is None:
            self._message = self._parse(self._data)
            self._data = b""
        return self._message

    def take(self) -> Any:
        """The parsed request; the holder keeps nothing of it."""
        message = self._peek()
        self._message = None
        return message

    def HasField(self, name: str) -> bool:  # the protobuf method it stands for
        return bool(self._peek().HasField(name))

    @property
    def node(self) -> Any:
        return self._peek().node


async def _taken(requests: AsyncIterator[_Incoming]) -> AsyncIterator[Any]:
    """Each request taken out of its holder (nothing here holds it once yielded)."""
    async for incoming in requests:
        yield incoming.take()


StreamFactory = Callable[[str], XdsStream[Any]]


class XdsServices:
    """Builds the gRPC handlers over one cache and one proxy registry."""

    def __init__(
        self,
        cache: SnapshotCache,
        registry: ProxyRegistry,
        limits: StreamLimits | None = None,
    ) -> None:
        self.cache = cache
        self.registry = registry
        self.limits = limits or StreamLimits()

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        stream = self._stream_handler
        result = [
            grpc.method_handlers_generic_handler(
                ADS_SERVICE,
                {
                    "StreamAggregatedResources": stream(SotwStream, PUSH_ORDER, ads=True),
                    "DeltaAggregatedResources": stream(DeltaStream, PUSH_ORDER, ads=True),
                },
            )
        ]
        for service, suffix, type_url in PER_TYPE_SERVICES:
            result.append(
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        f"Stream{suffix}": stream(SotwStream, (type_url,), ads=False),
                        f"Delta{suffix}": stream(DeltaStream, (type_url,), ads=False),
                        f"Fetch{suffix}": self._fetch_handler(type_url),
                    },
                )
            )
        return result

    # -- handlers ---------------------------------------------------------------------------

    def _stream_handler(
        self, stream_class: type[SotwStream | DeltaStream], types: tuple[str, ...], *, ads: bool
    ) -> grpc.RpcMethodHandler[Any, _Outgoing]:
        """A SotW or delta stream handler serving ``types`` (all of them on ADS)."""
        request_class = DiscoveryRequest if stream_class is SotwStream else DeltaDiscoveryRequest

        def make(peer: str) -> XdsStream[Any]:
            return stream_class(self.cache, self.registry, self.limits, types, peer, ads=ads)

        return grpc.stream_stream_rpc_method_handler(
            self._streamer(make),
            request_deserializer=functools.partial(_Incoming, request_class.FromString),
            response_serializer=_take,
        )

    def _streamer(
        self, make: StreamFactory
    ) -> Callable[
        [AsyncIterator[Any], grpc.aio.ServicerContext[Any, Any]], AsyncIterator[_Outgoing]
    ]:
        async def serve(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[_Outgoing]:
            stream = make(context.peer())
            try:
                async for data in stream.run(_taken(requests)):
                    yield _Outgoing(data)
                    del data  # nor keep it here while the stream idles
            except StreamError as error:
                log.warning(
                    "stream refused node=%s peer=%s: %s (%s)",
                    stream.node_id or "-",
                    stream.peer,
                    error.detail,
                    error.code.name,
                )
                await context.abort(error.code, error.detail)
            except Exception:
                # A bug must cost one stream, never the server: log it and end the stream.
                log.exception("stream failed node=%s peer=%s", stream.node_id or "-", stream.peer)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return serve

    def _fetch_handler(self, type_url: str) -> grpc.RpcMethodHandler[Any, bytes]:
        async def fetch(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            if request.type_url and request.type_url != type_url:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "wrong type_url")
            if len(request.resource_names) > self.limits.max_resource_names:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many names")
            node = request.node
            snapshot = self.cache.snapshot_for(
                str(node.cluster), str(node.locality.zone), client_type(node)
            )
            present = snapshot.of_type(type_url)
            names = set(request.resource_names)
            if not names or "*" in names:
                selected = list(present.values())
            else:
                selected = [present[n] for n in names if n in present]
            selected.sort(key=lambda r: r.name)
            version = set_version(selected)
            body = b"".join(r.sotw_field for r in selected)
            return encoding.sotw_response(version, type_url, "", body)

        return grpc.unary_unary_rpc_method_handler(
            fetch,
            request_deserializer=DiscoveryRequest.FromString,
            response_serializer=_identity,
        )
