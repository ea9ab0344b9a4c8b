"""``translate(inventory, config, identities)``: the whole operator config (and the mesh's
workload identities) -> Envoy resources per group.

Pure and deterministic: no I/O, no clock, every tuple sorted by resource name. Each
listener, cluster, endpoint assignment and secret is built by a cached per-item function
(``listeners.listener``, ``clusters.cluster``, ``endpoints.load_assignment``,
``tls.secret``), so after a change only what changed is rebuilt; route configurations are
rebuilt per translation.

A group gets the secrets (certificates) its listeners and clusters use, and no others.
TLS that cannot be set up as written (a policy or certificate missing or of the wrong kind:
validation refuses such writes, so only a store edited behind the API's back has them)
fails closed: an https listener is left out, and a service is sent no instances (503)
rather than spoken to without the TLS it asks for.

With a ``Mesh`` document, each group that fronts a mesh service also gets that service's
sidecar resources (see ``mesh``), merged into its edge resources; without one, nothing
changes. A named group whose routes call a mesh service (``edge_callers``) calls it as a
sidecar would: its cluster for the service (still named after it) goes to the service's
sidecars over mutual TLS with the group's own identity, verifying the service's SPIFFE ID;
until the group's identity is issued, the service gets no instances (fail closed).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from google.protobuf.message import Message

from xds_server.model.certificate import CertificateForm
from xds_server.model.config import Config, Entry
from xds_server.model.inventory import Inventory, Service
from xds_server.model.listener import ListenerProtocol
from xds_server.model.mesh_checks import edge_callers
from xds_server.model.route import RouteSpec
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.model.tls import DownstreamTls, UpstreamTls
from xds_server.model.workload import NO_IDENTITIES, Identities
from xds_server.translate.auth import jwks_cluster, jwks_tls
from xds_server.translate.clusters import cluster
from xds_server.translate.edge import EdgeFilters, rule_features
from xds_server.translate.endpoints import empty_load_assignment, load_assignment
from xds_server.translate.groups import listeners_of, named_groups
from xds_server.translate.grpc import grpc_services, implied_policy
from xds_server.translate.listeners import listener
from xds_server.translate.mesh import mesh_resources
from xds_server.translate.mesh.identities import identity_secret, trust_bundle_secret
from xds_server.translate.mesh.merge import merged
from xds_server.translate.mesh.outbound import upstream_assignment, upstream_cluster
from xds_server.translate.output import ProxyResources, Translation, resource_name
from xds_server.translate.proxyless.resources import clear_caches as clear_grpc_plans
from xds_server.translate.proxyless.resources import grpc_plan, targets
from xds_server.translate.routes import (
    EnvoyRoute,
    envoy_routes,
    https_redirect_configuration,
    route_configuration,
)
from xds_server.translate.slots import Maker, Slots, changed_services, constant
from xds_server.translate.streams import stream_listener, stream_routes
from xds_server.translate.subsets import (
    empty_subset_assignment,
    subset_assignment,
    subset_cluster_name,
    subset_targets,
)
from xds_server.translate.telemetry import (
    metrics_cluster,
    metrics_route_configuration,
    tracing_cluster,
)
from xds_server.translate.tls import (
    downstream_certificates,
    secret,
    upstream_certificates,
)

#: A TLS policy part that cannot be used (see the module docstring).
_UNUSABLE = "unusable"


class _Translator:
    """Per-translation memo: each listener's resources are built once and shared by groups."""

    def __init__(self, config: Config, identities: Identities) -> None:
        self._config = config
        self._identities = identities
        self._callers = edge_callers(config)
        retry_policies = {name: entry.spec for name, entry in config.retry_policies.items()}
        service_policies = {name: entry.spec for name, entry in config.service_policies.items()}
        self._service_policies = service_policies
        rate_limit_policies = {
            name: entry.spec for name, entry in config.rate_limit_policies.items()
        }
        self._routes_of: dict[str, list[Entry[RouteSpec]]] = {name: [] for name in config.listeners}
        self._translated: dict[str, tuple[EnvoyRoute, ...]] = {}
        for name, entry in config.routes.items():
            attached = [
                listener_name
                for listener_name in entry.spec.listeners
                if listener_name in self._routes_of
            ]
            for listener_name in attached:
                self._routes_of[listener_name].append(entry)
            if attached:
                self._translated[name] = envoy_routes(
                    entry, retry_policies, service_policies, rate_limit_policies
                )
        self._route_configurations: dict[str, Message] = {}
        self._streams = stream_routes(config)
        self._grpc = grpc_services(r for e in config.routes.values() for r in e.spec.rules)

    def _route_configuration(self, listener_name: str) -> Message:
        found = self._route_configurations.get(listener_name)
        if found is None:
            spec = self._config.listeners[listener_name].spec
            if spec.https_redirect:
                found = https_redirect_configuration(listener_name, spec.https_redirect_port)
            elif spec.metrics is not None:
                found = metrics_route_configuration(listener_name, spec.metrics)
            else:
                found = route_configuration(
                    listener_name, self._routes_of[listener_name], self._translated
                )
            self._route_configurations[listener_name] = found
        return found

    def _usable(self, names: Iterable[str], key_pairs: Iterable[str]) -> bool:
        """Whether every certificate exists, ``key_pairs`` being key pairs and the rest CA
        bundles."""
        pairs = set(key_pairs)
        for name in names:
            entry = self._config.certificates.get(name)
            form = CertificateForm.KEY_PAIR if name in pairs else CertificateForm.CA_BUNDLE
            if entry is None or entry.spec.form is not form:
                return False
        return True

    def _downstream(self, listener_name: str) -> DownstreamTls | str | None:
        """The listener's TLS; ``None`` for plain http, ``_UNUSABLE`` if it cannot be set up."""
        spec = self._config.listeners[listener_name].spec
        if spec.protocol is not ListenerProtocol.HTTPS:
            return None
        tls = self._config.downstream_tls(spec.tls_policy)
        if tls is None or not self._usable(downstream_certificates(tls), tls.certificate_names()):
            return _UNUSABLE
        return tls

    def _upstream(self, service: str) -> UpstreamTls | str | None:
        """The service's TLS; ``None`` for none, ``_UNUSABLE`` if it cannot be set up."""
        policy = self._config.service_policy(service)
        if policy is None or policy.tls_policy is None:
            return None
        tls = self._config.upstream_tls(policy.tls_policy)
        pairs = (tls.client_certificate,) if tls is not None and tls.client_certificate else ()
        if tls is None or not self._usable(upstream_certificates(tls), pairs):
            return _UNUSABLE
        return tls

    def calls_mesh(self, group: str) -> bool:
        """Whether ``group``'s routes call a mesh service (its edge resources are its own)."""
        return group in self._callers

    def _mesh_upstream(
        self, group: str, service: str
    ) -> tuple[Message, Maker, tuple[Message, ...]] | None:
        """``group``'s cluster for mesh service ``service`` (named ``service``), the maker
        of its assignment (the sidecars) and the secrets it uses; ``None`` while the group
        has no identity or the mesh no trust bundle."""
        identity = self._identities.get(group)
        mesh = self._config.mesh_spec
        if identity is None or mesh is None or not self._identities.trust_bundle:
            return None
        protocol = self._config.sidecars[service].spec.inbound.protocol
        policy = self._config.service_policy(service)
        return (
            upstream_cluster(group, service, protocol, policy, mesh.trust_domain, service),
            functools.partial(_mesh_assignment, service),
            (identity_secret(identity), trust_bundle_secret(self._identities.trust_bundle)),
        )

    def _services(self, listener_names: Iterable[str]) -> list[str]:
        services = {
            service
            for listener_name in listener_names
            if self._serves_routes(listener_name)
            for entry in self._routes_of[listener_name]
            for rule in entry.spec.rules
            for service in rule.services
        }
        return sorted(services)

    def _subset_targets(self, listener_names: Iterable[str]) -> list[tuple[str, str]]:
        """Every ``(service, subset)`` the listeners' routes send to (see ``subsets``)."""
        rules = [
            rule
            for listener_name in listener_names
            if self._serves_routes(listener_name)
            for entry in self._routes_of[listener_name]
            for rule in entry.spec.rules
        ]
        return subset_targets(rules, self._service_policies)

    def _serves_routes(self, listener_name: str) -> bool:
        spec = self._config.listeners[listener_name].spec
        return not spec.https_redirect and spec.metrics is None

    def _edge(self, listener_name: str) -> EdgeFilters:
        """The filters the listener's (and its routes') edge policies need."""
        config = self._config
        auth_default = next(
            (n for n, e in config.auth_policies.items() if listener_name in e.spec.listeners),
            None,
        )
        limit_default = next(
            (
                e.spec
                for e in config.rate_limit_policies.values()
                if listener_name in e.spec.listeners
            ),
            None,
        )
        if not self._serves_routes(listener_name):
            return EdgeFilters()
        auth_names = {auth_default} if auth_default is not None else set()
        rbac = rate_limit = False
        for entry in self._routes_of[listener_name]:
            for rule in entry.spec.rules:
                auth = rule.auth
                if auth is not None:
                    if auth.policy is not None and auth.policy in config.auth_policies:
                        auth_names.add(auth.policy)
                    rbac = rbac or bool(auth.claims)
                rate_limit = rate_limit or rule.rate_limit is not None
        return EdgeFilters(
            auth_policies=tuple(
                (name, config.auth_policies[name].spec) for name in sorted(auth_names)
            ),
            auth_default=auth_default,
            rbac=rbac,
            rate_limit=rate_limit,
            rate_limit_policy=limit_default,
            features=rule_features(r for e in self._routes_of[listener_name] for r in e.spec.rules),
        )

    def _edge_clusters(
        self, listener_name: str, edge: EdgeFilters
    ) -> tuple[list[Message], set[str]] | None:
        """The clusters (and the certificates they use) the listener's policies and
        telemetry need; ``None`` if a JWKS CA cannot be used (the listener is left out)."""
        spec = self._config.listeners[listener_name].spec
        clusters: list[Message] = []
        certificates: set[str] = set()
        for policy, auth in edge.auth_policies:
            for provider in auth.providers:
                if provider.jwks.url is None:
                    continue
                tls = jwks_tls(provider)
                if tls is not None:
                    if not self._usable(upstream_certificates(tls), ()):
                        return None
                    certificates.update(upstream_certificates(tls))
                clusters.append(jwks_cluster(policy, provider))
        if spec.telemetry.tracing is not None:
            clusters.append(tracing_cluster(listener_name, spec.telemetry.tracing))
        if spec.metrics is not None:
            clusters.append(metrics_cluster(listener_name, spec.metrics))
        return clusters, certificates

    def plan(self, listener_names: tuple[str, ...], group: str | None = None) -> _Plan:
        """The edge resources of ``listener_names``, for the Envoys of ``group`` (``None``:
        a group no listener names), but for the endpoints: the slots that make them."""
        config = self._config
        mesh_services = self._callers.get(group, frozenset()) if group is not None else ()
        mesh_secrets: dict[str, Message] = {}
        certificates: set[str] = set()
        listeners: list[Message] = []
        served: list[str] = []
        clusters_by_name: dict[str, Message] = {}
        stream_services: set[str] = set()
        for name in listener_names:
            spec = config.listeners[name].spec
            if spec.protocol.is_stream:
                built = stream_listener(name, spec, self._streams.get(name, ()))
                if built is not None:
                    listeners.append(built.listener)
                    stream_services.update(built.services)
                continue
            downstream = self._downstream(name)
            if isinstance(downstream, str):
                continue
            edge = self._edge(name)
            extra = self._edge_clusters(name, edge)
            if extra is None:
                continue
            if downstream is not None:
                certificates.update(downstream_certificates(downstream))
            certificates.update(extra[1])
            for message in extra[0]:
                clusters_by_name[getattr(message, "name")] = message  # noqa: B009
            listeners.append(listener(name, config.listeners[name].spec, downstream, edge))
            served.append(name)
        clusters: list[Message] = []
        endpoints: list[tuple[str, Maker]] = []
        for name in sorted({*self._services(served), *stream_services}):
            policy = implied_policy(name, config.service_policy(name), self._grpc)
            if group is not None and name in mesh_services:
                found = self._mesh_upstream(group, name)
                if found is not None:
                    clusters.append(found[0])
                    endpoints.append((name, found[1]))
                    mesh_secrets.update((resource_name(m), m) for m in found[2])
                else:
                    clusters.append(cluster(name, policy))
                    endpoints.append((name, constant(empty_load_assignment(name))))
                continue
            upstream = self._upstream(name)
            if isinstance(upstream, str):
                clusters.append(cluster(name, policy))
                endpoints.append((name, constant(empty_load_assignment(name))))
                continue
            if upstream is not None:
                certificates.update(upstream_certificates(upstream))
            clusters.append(cluster(name, policy, upstream))
            endpoints.append((name, functools.partial(_service_assignment, name)))
        for name, subset in self._subset_targets(served):
            # A subset goes as its service does; failing closed (mesh, unusable TLS): 503.
            policy, upstream = config.service_policy(name), self._upstream(name)
            settings = implied_policy(name, policy, self._grpc)
            subset_name = subset_cluster_name(name, subset)
            if policy is None or isinstance(upstream, str) or name in mesh_services:
                clusters.append(cluster(name, settings, None, subset_name))
                endpoints.append((name, constant(empty_subset_assignment(name, subset))))
                continue
            clusters.append(cluster(name, settings, upstream, subset_name))
            endpoints.append((name, functools.partial(_subset_assignment, name, policy, subset)))
        clusters_by_name.update((getattr(c, "name"), c) for c in clusters)  # noqa: B009
        secrets = tuple(
            secret(name, config.certificates[name].spec) for name in sorted(certificates)
        )
        if mesh_secrets:
            secrets = tuple(sorted((*secrets, *mesh_secrets.values()), key=resource_name))
        skeleton = ProxyResources(
            clusters=tuple(clusters_by_name[name] for name in sorted(clusters_by_name)),
            listeners=tuple(listeners),
            routes=tuple(self._route_configuration(name) for name in served),
            secrets=secrets,
        )
        return _Plan(skeleton, Slots.of(endpoints))


def _service_assignment(name: str, service: Service | None) -> Message:
    return load_assignment(service or Service(name))


def _subset_assignment(
    name: str, policy: ServicePolicySpec, subset: str, service: Service | None
) -> Message:
    return subset_assignment(service or Service(name), policy, subset)


def _mesh_assignment(name: str, service: Service | None) -> Message:
    return upstream_assignment(service, name, edge=True)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A group's edge resources without their endpoints (made of the config and the
    identities alone), and the slots that make the endpoints of an inventory."""

    skeleton: ProxyResources
    slots: Slots

    def resources(
        self, inventory: Inventory, last: ProxyResources | None, changed: frozenset[str] | None
    ) -> ProxyResources:
        """The group's resources for ``inventory``; ``last`` (if not ``None``) was this
        plan's for an inventory that differs in the services ``changed`` only (``None``:
        unknown). ``last`` itself when none of its endpoints read a changed service."""
        if last is None or changed is None:
            return dataclasses.replace(self.skeleton, endpoints=self.slots.fill(inventory))
        endpoints = self.slots.refill(last.endpoints, inventory, changed)
        if endpoints is last.endpoints:
            return last
        return dataclasses.replace(last, endpoints=endpoints)


class _Plans:
    """Per ``(config, identities)``: the translator and each group's plan, made once (a
    group's plan on first use)."""

    def __init__(self, config: Config, identities: Identities) -> None:
        self.config = config
        self.identities = identities
        self._translator = _Translator(config, identities)
        self._default_listeners = listeners_of(config, None)
        self.default = self._translator.plan(self._default_listeners)
        self.named = named_groups(config)
        self._groups: dict[str, _Plan | None] = {}

    def for_group(self, group: str) -> _Plan | None:
        """``group``'s plan; ``None`` when it gets the default group's resources."""
        if group in self._groups:
            return self._groups[group]
        names = listeners_of(self.config, group)
        found = None
        if names != self._default_listeners or self._translator.calls_mesh(group):
            found = self._translator.plan(names, group)
        self._groups[group] = found
        return found


#: The gRPC clients' resources: their skeleton and slots (``proxyless.grpc_plan``) and the
#: resources filled from them.
_Grpc = tuple[ProxyResources, Slots, ProxyResources]


@dataclass(frozen=True, slots=True)
class _Last:
    """What the last translation with some ``_Plans`` made, for the next one to start from."""

    inventory: Inventory
    #: Per group with a plan of its own (``None``: the default group), its edge resources.
    edges: Mapping[str | None, ProxyResources]
    grpc: _Grpc
    translation: Translation


class _Memo:
    """The last translation per ``(config, identities)`` (a few: the dry-run preview
    translates other configs in between), by identity: the store hands over an unchanged
    config as the very same object. Each entry holds its keys, so their ids stay theirs.
    An entry is replaced in one assignment, so concurrent translations see it whole."""

    def __init__(self, limit: int = 4) -> None:
        self._limit = limit
        self._entries: dict[tuple[int, int], tuple[_Plans, _Last | None]] = {}

    def get(self, config: Config, identities: Identities) -> tuple[_Plans, _Last | None]:
        key = (id(config), id(identities))
        hit = self._entries.get(key)
        if hit is not None and hit[0].config is config and hit[0].identities is identities:
            return hit
        return _Plans(config, identities), None

    def put(self, plans: _Plans, last: _Last) -> None:
        key = (id(plans.config), id(plans.identities))
        entries = self._entries
        entries.pop(key, None)
        while len(entries) >= self._limit:
            entries.pop(next(iter(entries)))
        entries[key] = (plans, last)

    def clear(self) -> None:
        self._entries.clear()


_MEMO = _Memo()


def clear_caches() -> None:
    """Forget the last translations (tests and the cold benchmark start from nothing)."""
    _MEMO.clear()
    clear_grpc_plans()


def _same_targets(before: Inventory, after: Inventory, changed: frozenset[str]) -> bool:
    """Whether the changed services are in both inventories with the same gRPC targets
    (then the gRPC clients' listeners, routes and clusters stay as they are)."""
    for name in changed:
        old, new = before.services.get(name), after.services.get(name)
        if old is None or new is None or targets(old) != targets(new):
            return False
    return True


def _grpc(
    inventory: Inventory, config: Config, last: _Last | None, changed: frozenset[str] | None
) -> _Grpc:
    """The gRPC clients' resources, refilled from ``last``'s while only endpoints changed."""
    if (
        last is not None
        and changed is not None
        and _same_targets(last.inventory, inventory, changed)
    ):
        skeleton, slots, before = last.grpc
        endpoints = slots.refill(before.endpoints, inventory, changed)
        if endpoints is not before.endpoints:
            before = dataclasses.replace(before, endpoints=endpoints)
        return skeleton, slots, before
    skeleton, slots = grpc_plan(inventory, config)
    return skeleton, slots, dataclasses.replace(skeleton, endpoints=slots.fill(inventory))


def translate(
    inventory: Inventory, config: Config, identities: Identities = NO_IDENTITIES
) -> Translation:
    """Envoy resources for every proxy group (see ``Translation``); ``identities`` are the
    mesh CA's certificates (see ``mesh``: a group that fronts a mesh service also gets its
    sidecar resources).

    Incremental: the last translation with the same ``config`` and ``identities`` (the
    very same objects) is the starting point, and only the endpoints that read a service
    added, removed or replaced since its inventory are made again; everything else is
    handed over as the very same objects (a group none of whose endpoints changed: its
    very ``ProxyResources``). The result equals a translation from nothing."""
    plans, last = _MEMO.get(config, identities)
    if last is not None and last.inventory is inventory:
        return last.translation
    changed = changed_services(last.inventory, inventory) if last is not None else None
    before: Mapping[str | None, ProxyResources] = last.edges if last is not None else {}
    edges: dict[str | None, ProxyResources] = {}
    default = edges[None] = plans.default.resources(inventory, before.get(None), changed)
    mesh = mesh_resources(inventory, config, identities)
    groups: dict[str, ProxyResources] = {}
    for group in sorted({*plans.named, *mesh}):
        plan = plans.for_group(group)
        if plan is None:
            edge = default
        else:
            edge = edges[group] = plan.resources(inventory, before.get(group), changed)
        sidecar = mesh.get(group)
        groups[group] = edge if sidecar is None else merged(group, edge, sidecar)
    grpc = _grpc(inventory, config, last, changed)
    translation = Translation(default=default, groups=MappingProxyType(groups), grpc=grpc[2])
    _MEMO.put(plans, _Last(inventory, MappingProxyType(edges), grpc, translation))
    return translation
