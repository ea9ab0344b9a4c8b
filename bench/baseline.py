"""The wire baseline: a bare grpc.aio ADS server streaming pre-serialised bytes.

No subscriptions, no ACK bookkeeping, no snapshots: the first request for a type on a
stream gets every resource of that type (the bytes xds-server would send, captured from the
same translation), later requests are read and dropped, and ``/bench.Baseline/Push`` sends
one pre-built EDS update to every stream. What it costs is what gRPC and the event loop cost
to move the same bytes to the same clients: the floor under any Python xDS server.

    python -m bench.baseline --snapshot FILE      # prints "listening PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import pickle
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from xds_server.cache import encoding

ADS = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
_OPTIONS = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_concurrent_streams", 100_000),
    # As xds-server: a connect storm must not be dropped by gRPC's pending-call limits.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 50_000),
]


@dataclass(frozen=True, slots=True)
class CapturedType:
    version: str
    sotw_body: bytes  # every resource's DiscoveryResponse.resources field, concatenated
    delta_body: bytes  # the same as DeltaDiscoveryResponse.resources fields


@dataclass(frozen=True, slots=True)
class Captured:
    """What the baseline serves: per type URL, and the EDS updates ``Push`` can send."""

    types: dict[str, CapturedType]
    pushes: list[CapturedType] = field(default_factory=list)


def _identity(data: bytes) -> bytes:
    return data


class _Stream:
    def __init__(self, delta: bool) -> None:
        self.delta = delta
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.sent: set[str] = set()
        self.nonces = itertools.count(1)

    def response(self, type_url: str, captured: CapturedType) -> bytes:
        nonce = str(next(self.nonces))
        if self.delta:
            return encoding.delta_response(
                captured.version, type_url, nonce, captured.delta_body, []
            )
        return encoding.sotw_response(captured.version, type_url, nonce, captured.sotw_body)


class BaselineServer:
    def __init__(self, captured: Captured) -> None:
        self.captured = captured
        self.streams: set[_Stream] = set()
        self.pushes = 0

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        return [
            grpc.method_handlers_generic_handler(
                ADS,
                {
                    "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                        self._serve(delta=False),
                        request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                        response_serializer=_identity,
                    ),
                    "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                        self._serve(delta=True),
                        request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                        response_serializer=_identity,
                    ),
                },
            ),
            grpc.method_handlers_generic_handler(
                "bench.Baseline",
                {
                    "Push": grpc.unary_unary_rpc_method_handler(
                        self._push, request_deserializer=_identity, response_serializer=_identity
                    )
                },
            ),
        ]

    def _serve(self, *, delta: bool) -> Any:
        async def serve(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[bytes]:
            stream = _Stream(delta)
            self.streams.add(stream)

            async def read() -> None:
                try:
                    async for request in requests:
                        type_url = str(request.type_url)
                        if type_url in stream.sent:
                            continue
                        captured = self.captured.types.get(type_url)
                        if captured is not None:
                            stream.sent.add(type_url)
                            stream.queue.put_nowait(stream.response(type_url, captured))
                finally:
                    stream.queue.put_nowait(None)

            reader = asyncio.create_task(read())
            try:
                while True:
                    data = await stream.queue.get()
                    if data is None:
                        return
                    yield data
            finally:
                reader.cancel()
                self.streams.discard(stream)

        return serve

    async def _push(self, request: bytes, context: Any) -> bytes:
        """Send push variant ``int(request)`` to every stream that has endpoints."""
        variant = self.captured.pushes[int(request or b"0") % len(self.captured.pushes)]
        count = 0
        for stream in self.streams:
            if ENDPOINT in stream.sent:
                stream.queue.put_nowait(stream.response(ENDPOINT, variant))
                count += 1
        self.pushes += 1
        return str(count).encode()


def load(snapshot: str) -> Captured:
    with open(snapshot, "rb") as f:
        captured: Captured = pickle.load(f)
    return captured


async def _main(captured: Captured, host: str, port: int) -> None:
    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers(BaselineServer(captured).handlers())
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"listening {host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0.5)


def push(target: str, variant: int) -> int:
    """Ask a running baseline to push; returns how many streams it sent to."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/bench.Baseline/Push", request_serializer=_identity, response_deserializer=_identity
        )
        return int(call(str(variant).encode(), timeout=30))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--snapshot", required=True, help="a pickled Captured")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_main(load(args.snapshot), args.host, args.port))


if __name__ == "__main__":
    main()
