"""Start and stop the grpc.aio server that carries every xDS service."""

from __future__ import annotations

import grpc

from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.server.csds import csds_handler
from xds_server.server.limits import StreamLimits
from xds_server.server.services import XdsServices
from xds_server.server.tls import AdsTls
from xds_server.status import ProxyRegistry

#: Envoy's keepalive and message sizes: big snapshots (thousands of clusters) exceed gRPC's
#: 4 MiB default in one SotW response; requests stay small and are capped lower.
_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_concurrent_streams", 100_000),
    # Calls that arrived but that the event loop has not taken yet: gRPC drops them at
    # random above 1,000 and all of them above 3,000 by default. A fleet reconnecting after
    # a control-plane restart is exactly that burst (5,000 Envoys in a second lost a fifth
    # of their streams), so the bounds are raised; streams are long-lived and few per Envoy.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 50_000),
]


async def start_ads_server(
    cache: SnapshotCache,
    registry: ProxyRegistry,
    host: str,
    port: int,
    limits: StreamLimits | None = None,
    tls: AdsTls | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start serving on host:port (0 picks a free port); returns the server and its port.
    With ``tls``, the port speaks TLS (and checks client certificates and nodes as it says)."""
    server = grpc.aio.server(options=_OPTIONS)
    handlers = [*XdsServices(cache, registry, limits).handlers(), csds_handler(cache, registry)]
    server.add_generic_rpc_handlers(tls.wrap(handlers) if tls is not None else handlers)
    address = f"{host}:{port}"
    if tls is not None:
        bound = server.add_secure_port(address, tls.credentials())
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port} for ADS")
    await server.start()
    return server, bound
