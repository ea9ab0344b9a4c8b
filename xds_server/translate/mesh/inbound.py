"""A sidecar's inbound side: the public mTLS listener and the local application's cluster.

The listener accepts only callers with a certificate of the mesh (any SPIFFE ID of the
trust domain) and lets the RBAC from the intentions decide which may call. For http, http2
and grpc an HTTP connection manager puts the caller's SPIFFE ID into
``x-forwarded-client-cert`` (``SANITIZE_SET``: a value sent by the caller never gets
through) and routes every request to ``mesh-local/<service>``; tcp is proxied as bytes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.config.route.v3 import route_pb2 as route_configuration_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf.message import Message

from xds_server.model.mesh import Inbound, MeshProtocol, MeshSpec, MtlsMode
from xds_server.translate.auth import RBAC as HTTP_RBAC
from xds_server.translate.clusters import HTTP_PROTOCOL_OPTIONS, _http2_options
from xds_server.translate.listeners import HTTP_CONNECTION_MANAGER, ROUTER, TLS_INSPECTOR
from xds_server.translate.mesh.identities import inbound_socket
from xds_server.translate.mesh.intentions import Named, rbac_rules
from xds_server.translate.mesh.names import (
    inbound_listener_name,
    local_cluster_name,
    stat_prefix,
)
from xds_server.translate.protos import ONE_SECOND, ads, host_cluster, pack

NETWORK_RBAC: Final = "envoy.filters.network.rbac"
TCP_PROXY: Final = "envoy.filters.network.tcp_proxy"


def _route_to(name: str, cluster: str) -> Any:
    """One virtual host sending every request to ``cluster`` (``_ROUTE_TO``'s shape, copied
    and named: a copy is cheaper than building the nested messages, thousands per mesh)."""
    result = route_configuration_pb2.RouteConfiguration()
    result.CopyFrom(_route_to_shape())
    result.name = name
    host = result.virtual_hosts[0]
    host.name = name
    route = host.routes[0]
    route.name = name
    route.route.cluster = cluster
    return result


@lru_cache(maxsize=1)
def _route_to_shape() -> Any:
    route = route_pb2.Route(
        match=route_pb2.RouteMatch(prefix="/"), route=route_pb2.RouteAction(cluster="-")
    )
    return route_configuration_pb2.RouteConfiguration(
        virtual_hosts=[route_pb2.VirtualHost(domains=["*"], routes=[route])]
    )


def http_manager(
    name: str, cluster: str, http_filters: list[Any], inbound: bool, rds: bool = False
) -> Any:
    """An HTTP connection manager routing every request to ``cluster``, after ``http_filters``
    (with ``rds``, the routes come over ADS as route configuration ``name`` instead)."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix(name),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        http_filters=[*http_filters, _router()],
    )
    if rds:
        manager.rds.route_config_name = name
        manager.rds.config_source.CopyFrom(_ads())
    else:
        manager.route_config.CopyFrom(_route_to(name, cluster))
    if inbound:
        manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
        manager.set_current_client_cert_details.uri = True
    return manager


@lru_cache(maxsize=1)
def _router() -> Any:
    """The router filter (shared: a manager's filter list copies it)."""
    return hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router()))


@lru_cache(maxsize=1)
def _ads() -> Any:
    return ads()


def tcp_proxy(name: str, cluster: str) -> Any:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix(name), cluster=cluster)
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=pack(proxy))


#: The mTLS chain's HTTP RBAC filter itself allows nothing: the intentions' rules come with
#: the route (``RBACPerRoute`` over RDS, see ``inbound_route``), because a route update applies
#: to open connections at once while a listener update reaches only new ones (open ones keep
#: the old rules while they drain: Envoy's --drain-time-s, 600 s by default). Should the route
#: ever lack the rules, every call is denied (fail closed).
_DENY_ALL: Final = http_rbac_pb2.RBAC(rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW))


def _filters(name: str, service: str, protocol: MeshProtocol, rbac: Any | None) -> list[Any]:
    """The chain's filters: ``rbac`` for the mTLS chain of a tcp service (its intentions), an
    empty ``RBAC()`` for the mTLS chain of an http one (the rules are the route's), ``None``
    for the plain-text chain (no identity, no intentions)."""
    local = local_cluster_name(service)
    if protocol.is_http:
        if rbac is None:
            return [_manager_filter(http_manager(name, local, [], inbound=True))]
        return [_manager_filter(http_manager(name, local, [_deny_all()], inbound=True, rds=True))]
    filters = []
    if rbac is not None:
        network = network_rbac_pb2.RBAC(rules=rbac, stat_prefix=stat_prefix(name))
        filters.append(
            listener_components_pb2.Filter(name=NETWORK_RBAC, typed_config=pack(network))
        )
    return [*filters, tcp_proxy(name, local)]


@lru_cache(maxsize=1)
def _deny_all() -> Any:
    """The mTLS chain's HTTP RBAC filter (shared: a manager's filter list copies it)."""
    return hcm_pb2.HttpFilter(name=HTTP_RBAC, typed_config=pack(_DENY_ALL))


def _manager_filter(manager: Any) -> Any:
    return listener_components_pb2.Filter(name=HTTP_CONNECTION_MANAGER, typed_config=pack(manager))


@lru_cache(maxsize=4096)
def inbound_listener(
    service: str, inbound: Inbound, mesh: MeshSpec, intentions: tuple[Named, ...]
) -> Message:
    """``service``'s public listener on ``0.0.0.0:<inbound.port>``."""
    name = inbound_listener_name(service)
    protocol = inbound.protocol
    # An http service's rules live in its route (see ``_DENY_ALL``): its listener does not
    # change with the intentions.
    rbac = rbac_pb2.RBAC() if protocol.is_http else rbac_rules(mesh, intentions, False)
    permissive = mesh.mtls is MtlsMode.PERMISSIVE
    mtls = listener_components_pb2.FilterChain(
        name="mtls",
        filters=_filters(name, service, protocol, rbac),
        transport_socket=inbound_socket(service, mesh.trust_domain, protocol),
    )
    chains = [mtls]
    if permissive:
        mtls.filter_chain_match.transport_protocol = "tls"
        # Plain text carries no identity, so intentions cannot apply to it: a permissive
        # mesh lets plain-text callers through unchecked (for a migration only, as Consul).
        chains.append(
            listener_components_pb2.FilterChain(
                name="plaintext",
                filter_chain_match=listener_components_pb2.FilterChainMatch(
                    transport_protocol="raw_buffer"
                ),
                filters=_filters(name, service, protocol, None),
            )
        )
    result = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="0.0.0.0", port_value=inbound.port)
        ),
        filter_chains=chains,
    )
    if permissive:
        result.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
            )
        )
    message: Message = result
    return message


@lru_cache(maxsize=4096)
def local_cluster(service: str, inbound: Inbound) -> Message:
    """The application behind ``service``'s sidecar, at ``local_address:local_port``."""
    result = host_cluster(
        local_cluster_name(service), inbound.local_address, inbound.local_port, ONE_SECOND
    )
    if inbound.protocol in (MeshProtocol.HTTP2, MeshProtocol.GRPC):
        result.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(_http2_options())
    message: Message = result
    return message


@lru_cache(maxsize=4096)
def inbound_route(service: str, mesh: MeshSpec, intentions: tuple[Named, ...]) -> Message:
    """An http service's inbound routes (over RDS): every call to the local application,
    under the intentions' RBAC rules."""
    name = inbound_listener_name(service)
    result = _route_to(name, local_cluster_name(service))
    rules = rbac_rules(mesh, intentions, True)
    result.virtual_hosts[0].routes[0].typed_per_filter_config[HTTP_RBAC].CopyFrom(
        pack(http_rbac_pb2.RBACPerRoute(rbac=http_rbac_pb2.RBAC(rules=rules)))
    )
    message: Message = result
    return message
