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

from xds_server.model.config import Config
from xds_server.model.inventory import Inventory
from xds_server.model.mesh import MeshSpec, SidecarSpec
from xds_server.model.workload import Identities, WorkloadIdentity
from xds_server.translate.mesh.identities import identity_secret, trust_bundle_secret
from xds_server.translate.mesh.inbound import inbound_listener, inbound_route, local_cluster
from xds_server.translate.mesh.intentions import Named, by_destination
from xds_server.translate.mesh.outbound import (
    outbound_listener,
    upstream_assignment,
    upstream_cluster,
)
from xds_server.translate.output import ProxyResources, resource_name


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
        _add(group.listeners, outbound_listener(service, upstream, policy))
        _add(
            group.clusters,
            upstream_cluster(
                service, upstream.service, upstream.protocol, policy, mesh.spec.trust_domain
            ),
        )
        _add(
            group.endpoints, upstream_assignment(inventory.get(upstream.service), upstream.service)
        )


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
