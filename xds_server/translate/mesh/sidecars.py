"""The mesh part of each proxy group's resources: for every ``Sidecar`` its groups front,
the identity and trust bundle secrets, the inbound listener and local cluster, and per
upstream an outbound listener and the upstream's cluster and endpoints.

A sidecar whose service has no identity yet (the CA has not issued it) gets none of these:
a listener that cannot present a certificate would refuse every call, and one without TLS
would be worse, so the sidecar stays unconfigured until its certificate arrives (fail
closed). Without a ``Mesh`` document, or with an empty trust bundle, there is no mesh.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from xds_server.model.config import Config, Entry
from xds_server.model.inventory import Inventory
from xds_server.model.mesh import MeshSpec, SidecarSpec
from xds_server.model.rate_limit import RateLimitPolicySpec
from xds_server.model.retry import RetryPolicySpec
from xds_server.model.route import RouteSpec
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.model.workload import Identities, WorkloadIdentity
from xds_server.translate.mesh.identities import identity_secret, trust_bundle_secret
from xds_server.translate.mesh.inbound import inbound_listener, inbound_route, local_cluster
from xds_server.translate.mesh.intentions import Named, by_destination
from xds_server.translate.mesh.names import outbound_listener_name
from xds_server.translate.mesh.outbound import (
    catch_all_route,
    outbound_listener,
    upstream_assignment,
    upstream_cluster,
)
from xds_server.translate.mesh.routes import upstream_route_configuration
from xds_server.translate.output import ProxyResources, resource_name
from xds_server.translate.routes import envoy_routes


class _Group:
    """The mesh resources of one group, by name (a group fronting several services gets
    each one's; names are unique per service, ``mesh/<upstream>`` goes to the first)."""

    def __init__(self) -> None:
        self.clusters: dict[str, Message] = {}
        self.endpoints: dict[str, Message] = {}
        self.listeners: dict[str, Message] = {}
        self.secrets: dict[str, Message] = {}
        self.routes: dict[str, Message] = {}

    def resources(self) -> ProxyResources:
        return ProxyResources(
            clusters=tuple(self.clusters[name] for name in sorted(self.clusters)),
            endpoints=tuple(self.endpoints[name] for name in sorted(self.endpoints)),
            listeners=tuple(self.listeners[name] for name in sorted(self.listeners)),
            secrets=tuple(self.secrets[name] for name in sorted(self.secrets)),
            routes=tuple(self.routes[name] for name in sorted(self.routes)),
        )


def _add(into: dict[str, Message], *messages: Message) -> None:
    for message in messages:
        into.setdefault(resource_name(message), message)


@dataclass(frozen=True, slots=True)
class _Mesh:
    """What every sidecar's translation reads."""

    inventory: Inventory
    config: Config
    spec: MeshSpec
    intentions: Mapping[str, tuple[Named, ...]]
    trust_bundle: Message
    #: Per mesh upstream, the routes attached to it (``RouteSpec.upstreams``), by name.
    routes: Mapping[str, tuple[Entry[RouteSpec], ...]]
    retry_policies: Mapping[str, RetryPolicySpec]
    service_policies: Mapping[str, ServicePolicySpec]
    rate_limits: Mapping[str, RateLimitPolicySpec]


def _attached_routes(
    group: _Group,
    service: str,
    upstream: str,
    attached: tuple[Entry[RouteSpec], ...],
    mesh: _Mesh,
) -> None:
    """The route configuration of ``service``'s outbound listener to ``upstream`` with the
    routes attached to it, and the mesh cluster of every mesh service those routes send to."""
    config = mesh.config
    translated = tuple(
        (
            entry.name,
            entry.created_revision,
            envoy_routes(entry, mesh.retry_policies, mesh.service_policies, mesh.rate_limits),
        )
        for entry in attached
    )
    catch_all = catch_all_route(service, upstream, config.service_policy(upstream))
    name = outbound_listener_name(service, upstream)
    _add(group.routes, upstream_route_configuration(name, translated, catch_all))
    reached = {
        target for entry in attached for rule in entry.spec.rules for target in rule.services
    }
    for target in sorted(reached & config.sidecars.keys()):
        protocol = config.sidecars[target].spec.inbound.protocol
        policy = config.service_policy(target)
        _add(
            group.clusters,
            upstream_cluster(service, target, protocol, policy, mesh.spec.trust_domain),
        )
        _add(group.endpoints, upstream_assignment(mesh.inventory.get(target), target))


def _sidecar(
    group: _Group, service: str, spec: SidecarSpec, identity: WorkloadIdentity, mesh: _Mesh
) -> None:
    inventory, config = mesh.inventory, mesh.config
    _add(group.secrets, identity_secret(identity), mesh.trust_bundle)
    _add(
        group.listeners,
        inbound_listener(service, spec.inbound, mesh.spec, mesh.intentions.get(service, ())),
    )
    _add(group.clusters, local_cluster(service, spec.inbound))
    if spec.inbound.protocol.is_http:
        intentions = mesh.intentions.get(service, ())
        _add(group.routes, inbound_route(service, mesh.spec, intentions))
    for upstream in spec.upstreams:
        policy = config.service_policy(upstream.service)
        attached = mesh.routes.get(upstream.service, ()) if upstream.protocol.is_http else ()
        _add(group.listeners, outbound_listener(service, upstream, policy, bool(attached)))
        if attached:
            _attached_routes(group, service, upstream.service, attached, mesh)
        _add(
            group.clusters,
            upstream_cluster(
                service, upstream.service, upstream.protocol, policy, mesh.spec.trust_domain
            ),
        )
        _add(
            group.endpoints, upstream_assignment(inventory.get(upstream.service), upstream.service)
        )


def _routes_by_upstream(config: Config) -> dict[str, tuple[Entry[RouteSpec], ...]]:
    found: dict[str, list[Entry[RouteSpec]]] = {}
    for name in sorted(config.routes):
        entry = config.routes[name]
        for upstream in entry.spec.upstreams:
            found.setdefault(upstream, []).append(entry)
    return {upstream: tuple(entries) for upstream, entries in found.items()}


def mesh_resources(
    inventory: Inventory, config: Config, identities: Identities
) -> Mapping[str, ProxyResources]:
    """Per proxy group that fronts a service of the mesh, its mesh resources."""
    spec = config.mesh_spec
    if spec is None or not identities.trust_bundle:
        return {}
    mesh = _Mesh(
        inventory,
        config,
        spec,
        by_destination({name: entry.spec for name, entry in config.intentions.items()}),
        trust_bundle_secret(identities.trust_bundle),
        _routes_by_upstream(config),
        {name: entry.spec for name, entry in config.retry_policies.items()},
        {name: entry.spec for name, entry in config.service_policies.items()},
        {name: entry.spec for name, entry in config.rate_limit_policies.items()},
    )
    groups: dict[str, _Group] = {}
    for service in sorted(config.sidecars):
        identity = identities.get(service)
        if identity is None:
            continue
        sidecar = config.sidecars[service].spec
        for name in sorted(sidecar.groups_for(service)):
            _sidecar(groups.setdefault(name, _Group()), service, sidecar, identity, mesh)
    return {name: groups[name].resources() for name in sorted(groups)}
