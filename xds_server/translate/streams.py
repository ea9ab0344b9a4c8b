"""``tcp``/``tls`` listeners and their ``TcpRoute``/``TlsRoute``s -> Envoy listeners with
``tcp_proxy`` filter chains.

A ``tcp`` listener has one filter chain: a ``tcp_proxy`` to its (oldest) ``TcpRoute``'s
backends. A ``tls`` listener has the TLS inspector (which reads the ClientHello's SNI) and a
filter chain per ``TlsRoute`` matching its hostnames, with no transport socket: Envoy never
terminates TLS, the backend's own certificate reaches the client. There is no default chain,
so a client whose SNI no route lists (or who sends none) is disconnected.

Backends are clusters named after their service (``clusters.cluster``, with the service's
``ServicePolicy``: connect timeout, load balancing) with endpoints over EDS; the caller
builds those from ``StreamListener.services``. A listener no route attaches to is not built
at all (Envoy refuses a listener without filter chains); validation warns about it.
Results are cached per (listener, routes): specs are frozen, hashable models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf.message import Message

from xds_server.model.config import Config
from xds_server.model.listener import ListenerProtocol, ListenerSpec
from xds_server.model.streams import StreamRouteSpec, TcpRouteSpec, TlsRouteSpec
from xds_server.translate.listeners import TLS_INSPECTOR, json_access_log
from xds_server.translate.protos import duration, pack

TCP_PROXY: Final = "envoy.filters.network.tcp_proxy"

#: One JSON object per connection (the HTTP listeners' log has one per request).
TCP_ACCESS_LOG_FIELDS: Final = {
    "start_time": "%START_TIME%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "response_flags": "%RESPONSE_FLAGS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
}

#: A route by name, as a listener uses it.
NamedRoute = tuple[str, StreamRouteSpec]


@dataclass(frozen=True, slots=True)
class StreamListener:
    listener: Message
    #: The services whose clusters and endpoints the listener sends to, sorted.
    services: tuple[str, ...]


def stream_routes(config: Config) -> Mapping[str, tuple[NamedRoute, ...]]:
    """The stream routes of each ``tcp``/``tls`` listener, oldest first (a ``TcpRoute`` on
    a ``tcp`` listener, a ``TlsRoute`` on a ``tls`` one; others are not used)."""
    wanted: dict[str, list[tuple[int, str, StreamRouteSpec]]] = {}
    kinds: tuple[tuple[ListenerProtocol, Mapping[str, Any]], ...] = (
        (ListenerProtocol.TCP, config.tcp_routes),
        (ListenerProtocol.TLS, config.tls_routes),
    )
    for protocol, entries in kinds:
        for name, entry in entries.items():
            for listener in entry.spec.listeners:
                found = config.listeners.get(listener)
                if found is not None and found.spec.protocol is protocol:
                    wanted.setdefault(listener, []).append(
                        (entry.created_revision, name, entry.spec)
                    )
    return {
        listener: tuple((name, spec) for _, name, spec in sorted(routes, key=lambda r: r[:2]))
        for listener, routes in wanted.items()
    }


def _access_log(listener: str, route: str) -> Any:
    return json_access_log({**TCP_ACCESS_LOG_FIELDS, "listener": listener, "route_name": route})


def _tcp_proxy(listener: str, spec: ListenerSpec, name: str, route: StreamRouteSpec) -> Any:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=f"{listener}.{name}")
    # Envoy takes weights of 1 and more: a weight-0 backend stays referenced, but idle.
    active = [backend for backend in route.backends if backend.weight > 0]
    if len(active) == 1:
        proxy.cluster = active[0].service
    else:
        proxy.weighted_clusters.CopyFrom(
            tcp_proxy_pb2.TcpProxy.WeightedCluster(
                clusters=[
                    tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(
                        name=backend.service, weight=backend.weight
                    )
                    for backend in active
                ]
            )
        )
    if route.idle_timeout is not None:
        proxy.idle_timeout.CopyFrom(duration(route.idle_timeout))
    if spec.access_log and route.access_log:
        proxy.access_log.append(_access_log(listener, name))
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=pack(proxy))


def _tcp_chains(listener: str, spec: ListenerSpec, routes: tuple[NamedRoute, ...]) -> list[Any]:
    tcp = [(name, route) for name, route in routes if isinstance(route, TcpRouteSpec)]
    if not tcp:
        return []
    name, route = tcp[0]  # validation refuses a second one
    return [
        listener_components_pb2.FilterChain(
            name=name, filters=[_tcp_proxy(listener, spec, name, route)]
        )
    ]


def _tls_chains(listener: str, spec: ListenerSpec, routes: tuple[NamedRoute, ...]) -> list[Any]:
    chains = []
    taken: set[str] = set()
    for name, route in routes:
        if not isinstance(route, TlsRouteSpec):
            continue
        # The oldest route keeps a server name listed twice (validation refuses the newer),
        # so the listener never has two chains matching the same, which Envoy refuses.
        hostnames = [hostname for hostname in route.hostnames if hostname not in taken]
        taken.update(hostnames)
        if hostnames:
            chains.append(
                listener_components_pb2.FilterChain(
                    name=name,
                    filter_chain_match=listener_components_pb2.FilterChainMatch(
                        server_names=hostnames
                    ),
                    filters=[_tcp_proxy(listener, spec, name, route)],
                )
            )
    return chains


@lru_cache(maxsize=1024)
def stream_listener(
    name: str, spec: ListenerSpec, routes: tuple[NamedRoute, ...]
) -> StreamListener | None:
    """The Envoy listener of ``tcp``/``tls`` listener ``name`` with ``routes`` (see
    ``stream_routes``); ``None`` when no route gives it a filter chain."""
    is_tls = spec.protocol is ListenerProtocol.TLS
    chains = _tls_chains(name, spec, routes) if is_tls else _tcp_chains(name, spec, routes)
    if not chains:
        return None
    result = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=spec.address, port_value=spec.port)
        ),
        filter_chains=chains,
    )
    if is_tls:
        result.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
            )
        )
    used = {chain.name for chain in chains}
    services = sorted(
        {
            backend.service
            for route_name, route in routes
            if route_name in used
            for backend in route.backends
        }
    )
    return StreamListener(result, tuple(services))
