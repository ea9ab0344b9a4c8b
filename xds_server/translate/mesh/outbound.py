"""A sidecar's outbound side: per upstream, a listener on ``127.0.0.1:<local_port>`` and
the cluster ``mesh/<upstream>`` of the upstream's sidecars.

The cluster is the upstream's edge cluster (load balancing, circuit breakers, outlier
detection from its ``ServicePolicy``) with the mesh's mutual TLS instead of the policy's
TLS: the caller's identity as client certificate, and the server must be exactly the
upstream's SPIFFE ID. Active health checks are left out: they would have to pass the
upstream's intentions, and the registry already reports each sidecar's health. The route
sends everything to the cluster with the service policy's hash policies, as an edge route
to that service would.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from google.protobuf.message import Message

from xds_server.model.identity import IdentityMemo
from xds_server.model.inventory import Service
from xds_server.model.mesh import MeshProtocol, Upstream, spiffe_id
from xds_server.model.route import Backend, Match, Rule
from xds_server.model.service_policy import ServicePolicySpec, UpstreamProtocol
from xds_server.translate.actions import route_action
from xds_server.translate.clusters import cluster
from xds_server.translate.endpoints import load_assignment
from xds_server.translate.listeners import HTTP_CONNECTION_MANAGER
from xds_server.translate.mesh.identities import outbound_socket
from xds_server.translate.mesh.inbound import http_manager, tcp_proxy
from xds_server.translate.mesh.names import (
    outbound_listener_name,
    upstream_cluster_name,
    upstream_sni,
)
from xds_server.translate.protos import pack

_PROTOCOL: Final = {
    MeshProtocol.HTTP: UpstreamProtocol.HTTP1,
    MeshProtocol.HTTP2: UpstreamProtocol.HTTP2,
    MeshProtocol.GRPC: UpstreamProtocol.GRPC,
    MeshProtocol.TCP: UpstreamProtocol.HTTP1,  # no HTTP options at all
}


@lru_cache(maxsize=8192)
def catch_all_route(service: str, upstream: str, policy: ServicePolicySpec | None) -> Message:
    """Every request to ``mesh/<upstream>``, with the upstream's hash policies."""
    result = route_pb2.Route(name=outbound_listener_name(service, upstream))
    result.match.prefix = "/"
    result.route.CopyFrom(_catch_all_action(upstream, policy))
    message: Message = result
    return message


@lru_cache(maxsize=8192)
def _catch_all_action(upstream: str, policy: ServicePolicySpec | None) -> Message:
    """The action of every caller's catch-all route to ``upstream`` (shared: copied)."""
    rule = Rule(backends=(Backend(service=upstream),))
    policies = {upstream: policy} if policy is not None else {}
    action = route_action(rule, Match(), {}, policies)
    action.cluster = upstream_cluster_name(upstream)
    result: Message = action
    return result


@lru_cache(maxsize=8192)
def outbound_listener(
    service: str, upstream: Upstream, policy: ServicePolicySpec | None, rds: bool = False
) -> Message:
    """The listener ``service``'s application calls ``upstream`` through (with ``rds``, its
    routes are route configuration ``mesh-outbound/<service>/<upstream>``: routes attach)."""
    name = outbound_listener_name(service, upstream.service)
    target = upstream_cluster_name(upstream.service)
    if upstream.protocol.is_http:
        manager = http_manager(name, target, [], inbound=False, rds=rds)
        if not rds:
            manager.route_config.virtual_hosts[0].routes[0].CopyFrom(
                catch_all_route(service, upstream.service, policy)
            )
        network_filter = listener_components_pb2.Filter(
            name=HTTP_CONNECTION_MANAGER, typed_config=pack(manager)
        )
    else:
        network_filter = tcp_proxy(name, target)
    # ``_outbound_shape``'s copy, named: cheaper than building the nested messages anew.
    result = listener_pb2.Listener()
    result.CopyFrom(_outbound_shape())
    result.name = name
    result.address.socket_address.port_value = upstream.local_port
    result.filter_chains[0].filters.append(network_filter)
    message: Message = result
    return message


@lru_cache(maxsize=1)
def _outbound_shape() -> Message:
    result: Message = listener_pb2.Listener(
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1")),
        filter_chains=[listener_components_pb2.FilterChain()],
    )
    return result


@lru_cache(maxsize=8192)
def upstream_cluster(
    service: str,
    upstream: str,
    protocol: MeshProtocol,
    policy: ServicePolicySpec | None,
    trust_domain: str,
    name: str | None = None,
) -> Message:
    """``upstream``'s sidecars, reached with ``service``'s identity; the cluster (and its EDS
    name) is ``name``, by default ``mesh/<upstream>`` (an edge group's cluster for a mesh
    service keeps the service's name: its routes name it)."""
    base = _mesh_policy(policy, protocol)
    result = cluster_pb2.Cluster()
    result.CopyFrom(cluster(name or upstream_cluster_name(upstream), base))
    result.transport_socket.CopyFrom(
        outbound_socket(
            service,
            spiffe_id(trust_domain, upstream),
            upstream_sni(trust_domain, upstream),
            protocol,
        )
    )
    message: Message = result
    return message


@lru_cache(maxsize=8192)
def _mesh_policy(policy: ServicePolicySpec | None, protocol: MeshProtocol) -> ServicePolicySpec:
    """An upstream's policy as its mesh cluster applies it: the protocol the sidecars speak,
    no active health checks, no TLS of its own (the mesh's instead)."""
    return (policy or ServicePolicySpec()).model_copy(
        update={"protocol": _PROTOCOL[protocol], "health_check": None, "tls_policy": None}
    )


def upstream_assignment(service: Service | None, upstream: str, *, edge: bool = False) -> Message:
    """The ``ClusterLoadAssignment`` of ``mesh/<upstream>`` (with ``edge``: of the edge
    cluster ``<upstream>``): its sidecars' public ports, with their instances' health (none
    while the upstream has no registry entry)."""
    return (_edge_by_identity if edge else _by_identity)(
        service if service is not None else Service(upstream)
    )


def _assignment(service: Service) -> Message:
    return load_assignment(Service(upstream_cluster_name(service.name), service.mesh_endpoints))


def _edge_assignment(service: Service) -> Message:
    return load_assignment(Service(service.name, service.mesh_endpoints))


#: Looked up by the identity of the registry's ``Service`` first, as ``endpoints`` does.
_by_identity: IdentityMemo[Service, Message] = IdentityMemo(_assignment)
_edge_by_identity: IdentityMemo[Service, Message] = IdentityMemo(_edge_assignment)


def clear_assignments() -> None:
    """Forget the memoised assignments and shared parts (tests: a cold translation gives the
    same bytes)."""
    _by_identity.clear()
    _edge_by_identity.clear()
    _catch_all_action.cache_clear()
    _mesh_policy.cache_clear()
