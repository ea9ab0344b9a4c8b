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
from types import MappingProxyType
from typing import Any

from google.protobuf.message import Message

from xds_server.model.config import Config, Entry
from xds_server.model.inventory import Inventory, Service
from xds_server.model.mesh import MeshProtocol, MeshSpec, SidecarSpec, Upstream
from xds_server.model.rate_limit import RateLimitPolicySpec
from xds_server.model.retry import RetryPolicySpec
from xds_server.model.route import RouteSpec
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.model.workload import Identities, WorkloadIdentity
from xds_server.translate.mesh.identities import cache_clear as identities_cache_clear
from xds_server.translate.mesh.identities import identity_secret, trust_bundle_secret
from xds_server.translate.mesh.inbound import inbound_listener, inbound_route, local_cluster
from xds_server.translate.mesh.intentions import Named, by_destination, rbac_rules
from xds_server.translate.mesh.merge import clear_cache as clear_merged
from xds_server.translate.mesh.names import outbound_listener_name
from xds_server.translate.mesh.outbound import (
    catch_all_route,
    clear_assignments,
    outbound_listener,
    upstream_assignment,
    upstream_cluster,
)
from xds_server.translate.mesh.routes import clear_cache, upstream_route_configuration
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
class _Target:
    """A mesh service that routes attached to an upstream send to (its cluster and
    endpoints go to the caller too)."""

    service: str
    protocol: MeshProtocol
    policy: ServicePolicySpec | None
    instances: Service | None


@dataclass(frozen=True, slots=True)
class _UpstreamInputs:
    upstream: Upstream
    policy: ServicePolicySpec | None
    #: The routes attached to it (``RouteSpec.upstreams``), for an http upstream.
    attached: tuple[Entry[RouteSpec], ...]
    instances: Service | None
    targets: tuple[_Target, ...]


@dataclass(frozen=True, slots=True)
class _SidecarInputs:
    """Everything one service's sidecar resources are made of, and nothing else: equal
    inputs give equal resources, so a translation rebuilds only the sidecars whose inputs
    changed (a renewed identity, an upstream's instances, an intention...). Compared with
    ``==``, which tests each field's identity first: unchanged documents and services are
    the very same objects from one translation to the next, so that costs little."""

    service: str
    spec: SidecarSpec
    identity: WorkloadIdentity
    trust_bundle: tuple[str, ...]
    mesh: MeshSpec
    intentions: tuple[Named, ...]
    upstreams: tuple[_UpstreamInputs, ...]
    #: The policies attached routes read (empty when no route is attached).
    retry_policies: Mapping[str, RetryPolicySpec]
    service_policies: Mapping[str, ServicePolicySpec]
    rate_limits: Mapping[str, RateLimitPolicySpec]


def _attached_routes(group: _Group, inputs: _SidecarInputs, upstream: _UpstreamInputs) -> None:
    """The route configuration of the service's outbound listener to ``upstream`` with the
    routes attached to it, and the mesh cluster of every mesh service those routes send to."""
    service, name_of_upstream = inputs.service, upstream.upstream.service
    translated = tuple(
        (
            entry.name,
            entry.created_revision,
            envoy_routes(entry, inputs.retry_policies, inputs.service_policies, inputs.rate_limits),
        )
        for entry in upstream.attached
    )
    catch_all = catch_all_route(service, name_of_upstream, upstream.policy)
    name = outbound_listener_name(service, name_of_upstream)
    _add(group.routes, upstream_route_configuration(name, translated, catch_all))
    for target in upstream.targets:
        _add(
            group.clusters,
            upstream_cluster(
                service, target.service, target.protocol, target.policy, inputs.mesh.trust_domain
            ),
        )
        _add(group.endpoints, upstream_assignment(target.instances, target.service))


def _sidecar(group: _Group, inputs: _SidecarInputs) -> None:
    """Add the sidecar resources of ``inputs.service`` (made of ``inputs`` only)."""
    service, spec, mesh = inputs.service, inputs.spec, inputs.mesh
    _add(
        group.secrets,
        identity_secret(inputs.identity),
        trust_bundle_secret(inputs.trust_bundle),
    )
    _add(group.listeners, inbound_listener(service, spec.inbound, mesh, inputs.intentions))
    _add(group.clusters, local_cluster(service, spec.inbound))
    if spec.inbound.protocol.is_http:
        _add(group.routes, inbound_route(service, mesh, inputs.intentions))
    for upstream in inputs.upstreams:
        attached = bool(upstream.attached)
        _add(
            group.listeners,
            outbound_listener(service, upstream.upstream, upstream.policy, attached),
        )
        if attached:
            _attached_routes(group, inputs, upstream)
        _add(
            group.clusters,
            upstream_cluster(
                service,
                upstream.upstream.service,
                upstream.upstream.protocol,
                upstream.policy,
                mesh.trust_domain,
            ),
        )
        _add(group.endpoints, upstream_assignment(upstream.instances, upstream.upstream.service))


def _routes_by_upstream(config: Config) -> dict[str, tuple[Entry[RouteSpec], ...]]:
    found: dict[str, list[Entry[RouteSpec]]] = {}
    for name in sorted(config.routes):
        entry = config.routes[name]
        for upstream in entry.spec.upstreams:
            found.setdefault(upstream, []).append(entry)
    return {upstream: tuple(entries) for upstream, entries in found.items()}


@dataclass(frozen=True, slots=True)
class _Shared:
    """What every sidecar's inputs are picked from, computed once per translation."""

    inventory: Inventory
    config: Config
    spec: MeshSpec
    trust_bundle: tuple[str, ...]
    intentions: Mapping[str, tuple[Named, ...]]
    routes: Mapping[str, tuple[Entry[RouteSpec], ...]]
    retry_policies: Mapping[str, RetryPolicySpec]
    service_policies: Mapping[str, ServicePolicySpec]
    rate_limits: Mapping[str, RateLimitPolicySpec]


_NO_POLICIES: Mapping[str, Any] = MappingProxyType({})


def _upstream_inputs(upstream: Upstream, shared: _Shared) -> _UpstreamInputs:
    config = shared.config
    attached = shared.routes.get(upstream.service, ()) if upstream.protocol.is_http else ()
    reached = {
        target for entry in attached for rule in entry.spec.rules for target in rule.services
    }
    targets = tuple(
        _Target(
            target,
            config.sidecars[target].spec.inbound.protocol,
            config.service_policy(target),
            shared.inventory.get(target),
        )
        for target in sorted(reached & config.sidecars.keys())
    )
    return _UpstreamInputs(
        upstream,
        config.service_policy(upstream.service),
        attached,
        shared.inventory.get(upstream.service),
        targets,
    )


def _inputs(
    service: str, spec: SidecarSpec, identity: WorkloadIdentity, shared: _Shared
) -> _SidecarInputs:
    upstreams = tuple(_upstream_inputs(upstream, shared) for upstream in spec.upstreams)
    routed = any(upstream.attached for upstream in upstreams)
    return _SidecarInputs(
        service=service,
        spec=spec,
        identity=identity,
        trust_bundle=shared.trust_bundle,
        mesh=shared.spec,
        intentions=shared.intentions.get(service, ()),
        upstreams=upstreams,
        retry_policies=shared.retry_policies if routed else _NO_POLICIES,
        service_policies=shared.service_policies if routed else _NO_POLICIES,
        rate_limits=shared.rate_limits if routed else _NO_POLICIES,
    )


class _GroupMemo:
    """Per proxy group, the inputs of its last translation and the resources made of them:
    equal inputs give the very same ``ProxyResources`` object, whose snapshot the pipeline
    then reuses without looking into it (see ``pipeline.snapshots``)."""

    def __init__(self, limit: int = 16_384) -> None:
        self._limit = limit
        self._entries: dict[str, tuple[tuple[_SidecarInputs, ...], ProxyResources]] = {}

    def resources(self, group: str, inputs: tuple[_SidecarInputs, ...]) -> ProxyResources:
        hit = self._entries.get(group)
        if hit is not None and hit[0] == inputs:
            return hit[1]
        built = _Group()
        for each in inputs:
            _sidecar(built, each)
        result = built.resources()
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[group] = (inputs, result)
        return result

    def clear(self) -> None:
        self._entries.clear()


_GROUPS = _GroupMemo()


def clear_caches() -> None:
    """Forget every memoised mesh resource (tests: a cold translation gives the same bytes)."""
    _GROUPS.clear()
    for cached in (
        identity_secret,
        trust_bundle_secret,
        inbound_listener,
        inbound_route,
        local_cluster,
        outbound_listener,
        upstream_cluster,
        catch_all_route,
        rbac_rules,
    ):
        cached.cache_clear()
    clear_assignments()
    clear_cache()
    clear_merged()
    identities_cache_clear()


def mesh_resources(
    inventory: Inventory, config: Config, identities: Identities
) -> Mapping[str, ProxyResources]:
    """Per proxy group that fronts a service of the mesh, its mesh resources."""
    spec = config.mesh_spec
    if spec is None or not identities.trust_bundle:
        return {}
    shared = _Shared(
        inventory,
        config,
        spec,
        identities.trust_bundle,
        by_destination({name: entry.spec for name, entry in config.intentions.items()}),
        _routes_by_upstream(config),
        {name: entry.spec for name, entry in config.retry_policies.items()},
        {name: entry.spec for name, entry in config.service_policies.items()},
        {name: entry.spec for name, entry in config.rate_limit_policies.items()},
    )
    by_group: dict[str, list[_SidecarInputs]] = {}
    for service in sorted(config.sidecars):
        identity = identities.get(service)
        if identity is None:
            continue
        sidecar = config.sidecars[service].spec
        inputs = _inputs(service, sidecar, identity, shared)
        for name in sorted(sidecar.groups_for(service)):
            by_group.setdefault(name, []).append(inputs)
    return {name: _GROUPS.resources(name, tuple(by_group[name])) for name in sorted(by_group)}
