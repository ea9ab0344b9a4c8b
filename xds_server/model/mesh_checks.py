"""Checks of the mesh documents (``Mesh``, ``Sidecar``, ``Intention``) across the config.

Errors are what Envoy would refuse or what cannot work: two listeners on one socket of a
proxy (a sidecar's inbound and upstream ports, its application's loopback port and the
``Listener`` documents its groups get), two intentions for one source and destination (which
one decides would depend on order), L7 permissions for a destination that speaks tcp, a
proxy group named by two ``Sidecar`` documents (see ``_shared_groups``), and a provided CA
the server cannot issue from. Warnings are what is accepted but does nothing yet:
sidecars or intentions without a ``Mesh``, services the registry does not know, a listener
of every group routing to a mesh service (it calls the plain endpoints, see ``edge_callers``).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from xds_server.model.certificate import CertificateForm
from xds_server.model.config import Config
from xds_server.model.document import Kind
from xds_server.model.inventory import Inventory
from xds_server.model.listener import ListenerSpec
from xds_server.model.mesh import MESH_NAME, CaProvider, SidecarSpec
from xds_server.model.pki import PemError, certificate_summaries, check_key_pair
from xds_server.model.problems import Problem

NO_MESH = "no Mesh document: sidecars get no mesh config until one exists (PUT /v1/mesh)"
#: Where the translation binds a sidecar's public inbound port, and its upstream ports.
INBOUND_ADDRESS = "0.0.0.0"
UPSTREAM_ADDRESS = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class _Bind:
    """A socket a proxy of ``groups`` (empty: every group) binds, or that its local
    application holds, and the document field that asks for it."""

    kind: str
    name: str
    field: str
    address: str
    port: int
    groups: frozenset[str]
    order: tuple[int, int, str, int]

    def describe(self, verb: str = "already uses") -> str:
        what = "listener" if self.kind == Kind.LISTENER.value else "sidecar"
        return f"{what} {self.name!r} ({self.field}) {verb} port {self.port} on {self.address}"


#: Parsed once per address text (a thousand sidecars share a handful of addresses).
_ip = lru_cache(maxsize=4096)(ipaddress.ip_address)


def _addresses_overlap(a: str, b: str) -> bool:
    first, second = _ip(a), _ip(b)
    if first.version != second.version:
        return False
    return first == second or first.is_unspecified or second.is_unspecified


def _sidecar_binds(name: str, spec: SidecarSpec, created: int) -> Iterator[_Bind]:
    groups = frozenset(spec.groups_for(name))
    inbound = spec.inbound

    def bind(field: str, address: str, port: int, position: int) -> _Bind:
        return _Bind(
            Kind.SIDECAR.value, name, field, address, port, groups, (created, 1, name, position)
        )

    yield bind("spec.inbound.port", INBOUND_ADDRESS, inbound.port, 0)
    # An application on the sidecar's host holds its port there too.
    if _ip(inbound.local_address).is_loopback:
        yield bind("spec.inbound.local_port", inbound.local_address, inbound.local_port, 1)
    for index, upstream in enumerate(spec.upstreams):
        field = f"spec.upstreams[{index}].local_port"
        yield bind(field, UPSTREAM_ADDRESS, upstream.local_port, index + 2)


def _binds_by_port(config: Config) -> dict[int, list[_Bind]]:
    by_port: dict[int, list[_Bind]] = {}
    for entry in config.listeners.values():
        spec = entry.spec
        order = (entry.created_revision, 0, entry.name, 0)
        bind = _Bind(
            Kind.LISTENER.value,
            entry.name,
            "spec.port",
            spec.address,
            spec.port,
            frozenset(spec.groups),
            order,
        )
        by_port.setdefault(spec.port, []).append(bind)
    for sidecar in config.sidecars.values():
        for bind in _sidecar_binds(sidecar.name, sidecar.spec, sidecar.created_revision):
            by_port.setdefault(bind.port, []).append(bind)
    return by_port


def _sharing_a_group(binds: list[_Bind]) -> Iterator[tuple[_Bind, _Bind]]:
    """Every (earlier, later) pair of ``binds`` (one port) whose groups overlap, found by
    group: a thousand sidecars on one inbound port, each its own group, make no pairs."""
    everywhere = [b for b in binds if not b.groups]
    by_group: dict[str, list[_Bind]] = {}
    for bind in binds:
        for group in bind.groups:
            by_group.setdefault(group, []).append(bind)
    candidates = [everywhere, *by_group.values()]
    candidates += [[wide, b] for wide in everywhere for b in binds if b.groups]
    seen: set[tuple[int, int]] = set()
    for candidate in candidates:
        ordered = sorted(candidate, key=lambda b: b.order)
        for index, later in enumerate(ordered):
            for earlier in ordered[:index]:
                if (key := (id(earlier), id(later))) not in seen:
                    seen.add(key)
                    yield earlier, later


def _port_collisions(config: Config) -> Iterator[Problem]:
    """Each side of a collision that involves a sidecar gets the error (naming the other), so
    whichever document is being written, its answer names its own field. Two listeners are
    ``validation``'s business."""
    for binds in _binds_by_port(config).values():
        if len(binds) < 2:
            continue
        for earlier, later in _sharing_a_group(binds):
            if earlier.kind == later.kind == Kind.LISTENER.value:
                continue
            if _addresses_overlap(earlier.address, later.address):
                yield Problem(later.kind, later.name, later.field, earlier.describe())
                yield Problem(
                    earlier.kind, earlier.name, earlier.field, later.describe("also asks for")
                )


def _shared_groups(config: Config) -> Iterator[Problem]:
    """A proxy group fronting two services is refused: a proxy of a group gets one config and
    proves one identity, so a second ``Sidecar`` naming the group (or the group named like
    another service, by default) would bind the same upstream ports and present the first
    service's certificate. Both documents get the error (naming both), so whichever is being
    written is refused at its own ``spec.groups``."""
    first: dict[str, str] = {}
    ordered = sorted(config.sidecars.values(), key=lambda e: (e.created_revision, e.name))
    for entry in ordered:
        for group in entry.spec.groups_for(entry.name):
            owner = first.setdefault(group, entry.name)
            if owner == entry.name:
                continue
            reason = (
                f"proxy group {group!r} would front two services, {owner!r} and"
                f" {entry.name!r} (their Sidecars both name it): a group's proxies get one"
                " config and one identity, so a group fronts one service; give each service's"
                " sidecars a group of their own"
            )
            for name in (entry.name, owner):
                yield Problem(Kind.SIDECAR.value, name, "spec.groups", reason)


def _intention_problems(config: Config) -> Iterator[Problem]:
    first: dict[tuple[str, str], str] = {}
    ordered = sorted(config.intentions.values(), key=lambda e: (e.created_revision, e.name))
    for entry in ordered:
        spec = entry.spec
        pair = (spec.source, spec.destination)
        if pair in first:
            yield Problem(
                Kind.INTENTION.value,
                entry.name,
                "spec.source",
                f"intention {first[pair]!r} already says whether {spec.source!r} may call "
                f"{spec.destination!r}; one intention per source and destination (put its "
                "permissions in one list, in order)",
            )
        else:
            first[pair] = entry.name
        sidecar = config.sidecars.get(spec.destination)
        if spec.permissions and sidecar is not None and not sidecar.spec.inbound.protocol.is_http:
            yield Problem(
                Kind.INTENTION.value,
                entry.name,
                "spec.permissions",
                f"service {spec.destination!r} speaks tcp (its Sidecar's inbound.protocol): "
                "L7 permissions need http, http2 or grpc; use action instead",
            )


def _can_issue(certificate_pem: str, key_pem: str) -> str | None:
    """Why a CA certificate (the first of the chain) and its key cannot issue the mesh's
    certificates (``None`` if they can); both are valid PEM already (the ``Certificate``)."""
    if not certificate_summaries(certificate_pem)[0].is_ca:
        return "is not a CA certificate (it needs BasicConstraints CA:true)"
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii", "replace"))
    try:
        usage: x509.KeyUsage | None = certificate.extensions.get_extension_for_class(
            x509.KeyUsage
        ).value
    except (x509.ExtensionNotFound, ValueError):
        usage = None
    if usage is not None and not usage.key_cert_sign:
        return "has a KeyUsage without keyCertSign"
    if not isinstance(certificate.public_key(), ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return "has a key that cannot sign mesh certificates: use ECDSA or RSA"
    try:
        check_key_pair(certificate_pem, key_pem)
    except PemError as error:
        return f"cannot be used: {error.reason}"
    return None


def _provided_ca_problem(config: Config, now: datetime.datetime | None) -> str | None:
    """What the mesh CA authority would refuse in a provided CA (it signs with the key, so
    the key is needed inline: the server does not read key files)."""
    mesh = config.mesh_spec
    if mesh is None or mesh.ca.provider is not CaProvider.PROVIDED or mesh.ca.certificate is None:
        return None
    name = mesh.ca.certificate
    entry = config.certificates.get(name)
    if entry is None:
        return f"no certificate {name!r}"
    spec = entry.spec
    if spec.form is not CertificateForm.KEY_PAIR:
        return (
            f"certificate {name!r} is a CA bundle; a provided mesh CA is a certificate with its "
            "private key"
        )
    if spec.certificate is None or spec.private_key is None:
        return (
            f"certificate {name!r} is given as files; a provided mesh CA holds its certificate "
            "and private_key inline (the server signs with the key)"
        )
    try:
        if reason := _can_issue(spec.certificate, spec.private_key):
            return f"certificate {name!r} {reason}"
        expires = certificate_summaries(spec.certificate)[0].not_after
    except PemError as error:
        return f"certificate {name!r}: {error.reason}"
    except ValueError:
        return f"certificate {name!r} is not a valid X.509 certificate"
    if now is not None and expires <= now:
        return f"certificate {name!r} has expired: the mesh cannot issue from it"
    return None


def _upstream_route_backends(config: Config) -> Iterator[Problem]:
    """A route attached to mesh upstreams sends to mesh services only: a sidecar reaches
    nothing else (its outbound clusters are other services' sidecars)."""
    for name, entry in config.routes.items():
        if not entry.spec.upstreams:
            continue
        for i, rule in enumerate(entry.spec.rules):
            for j, backend in enumerate(rule.backends):
                if backend.service not in config.sidecars:
                    yield Problem(
                        Kind.ROUTE.value,
                        name,
                        f"spec.rules[{i}].backends[{j}].service",
                        "a route attached to mesh upstreams sends to mesh services only "
                        f"(no Sidecar for {backend.service!r})",
                    )


def _upstream_route_warnings(config: Config) -> Iterator[Problem]:
    if config.mesh_spec is None:
        return
    for name, entry in config.routes.items():
        for index, upstream in enumerate(entry.spec.upstreams):
            if upstream not in config.sidecars:
                yield Problem(
                    Kind.ROUTE.value,
                    name,
                    f"spec.upstreams[{index}]",
                    f"no Sidecar for service {upstream!r}: the route applies once one exists",
                )


def mesh_errors(config: Config, now: datetime.datetime | None = None) -> Iterator[Problem]:
    """Every error of the mesh documents (see the module's docstring); with ``now``, a
    provided CA is checked for expiry too."""
    yield from _port_collisions(config)
    yield from _shared_groups(config)
    yield from _upstream_route_backends(config)
    yield from _intention_problems(config)
    if reason := _provided_ca_problem(config, now):
        yield Problem(Kind.MESH.value, MESH_NAME, "spec.ca.certificate", reason)


def _serves_routes(spec: ListenerSpec) -> bool:
    return not spec.https_redirect and spec.metrics is None


def _mesh_services_by_listener(config: Config) -> dict[str, set[str]]:
    """Per listener that serves routes, the mesh services (with a ``Sidecar``) its routes'
    rules send to; empty without a ``Mesh``."""
    if config.mesh_spec is None or not config.sidecars:
        return {}
    found: dict[str, set[str]] = {}
    for entry in config.routes.values():
        reached = {
            service
            for rule in entry.spec.rules
            for service in rule.services
            if service in config.sidecars
        }
        if not reached:
            continue
        for name in entry.spec.listeners:
            listener = config.listeners.get(name)
            if listener is not None and _serves_routes(listener.spec):
                found.setdefault(name, set()).update(reached)
    return found


def edge_callers(config: Config) -> dict[str, frozenset[str]]:
    """Per named edge group (a group some listener's ``groups`` names), the mesh services
    its listeners' routes call. Such a group calls them over mutual TLS with its own
    identity, ``spiffe_id(trust_domain, group)``, so intentions name it as their ``source``.
    A listener of every group (no ``groups``) makes no caller: which identity would an
    unnamed group present? (``mesh_warnings`` says so.)"""
    callers: dict[str, set[str]] = {}
    for name, services in _mesh_services_by_listener(config).items():
        for group in config.listeners[name].spec.groups:
            callers.setdefault(group, set()).update(services)
    return {group: frozenset(callers[group]) for group in sorted(callers)}


def _unnamed_edge_problems(config: Config) -> Iterator[Problem]:
    for name, services in sorted(_mesh_services_by_listener(config).items()):
        if config.listeners[name].spec.groups:
            continue
        for service in sorted(services):
            yield Problem(
                Kind.LISTENER.value,
                name,
                "spec.groups",
                f"listener {name!r} serves every group; name its groups to call mesh service "
                f"{service!r} over mTLS (until then it calls the service's plain endpoints)",
            )


def _overridden_tls_problems(config: Config) -> Iterator[Problem]:
    """A mesh service's upstream TLS policy, which its edge callers do not use."""
    called = sorted({service for services in edge_callers(config).values() for service in services})
    for service in called:
        policy = config.service_policy(service)
        if policy is not None and policy.tls_policy is not None:
            yield Problem(
                Kind.SERVICE_POLICY.value,
                service,
                "spec.tls_policy",
                f"service {service!r} is in the mesh: edge groups call it over the mesh's "
                "mutual TLS, not with this TLS policy",
            )


def mesh_warnings(config: Config) -> Iterator[Problem]:
    """What is accepted but does nothing yet, whatever the registry holds."""
    yield from _unnamed_edge_problems(config)
    yield from _overridden_tls_problems(config)
    yield from _upstream_route_warnings(config)
    if config.mesh_spec is None:
        for name in config.sidecars:
            yield Problem(Kind.SIDECAR.value, name, "kind", NO_MESH)
        for name in config.intentions:
            yield Problem(Kind.INTENTION.value, name, "kind", NO_MESH)
    for name, entry in config.intentions.items():
        destination = entry.spec.destination
        if destination not in config.sidecars:
            yield Problem(
                Kind.INTENTION.value,
                name,
                "spec.destination",
                f"no Sidecar for service {destination!r}: the intention applies once one exists",
            )


def mesh_registry_warnings(config: Config, inventory: Inventory) -> Iterator[Problem]:
    """Services the registry does not know (checked once it has synced, like routes')."""
    for name, entry in config.sidecars.items():
        if inventory.get(name) is None:
            yield Problem(
                Kind.SIDECAR.value,
                name,
                "name",
                f"service {name!r} is not in the registry; its sidecars get config once it appears",
            )
        for index, upstream in enumerate(entry.spec.upstreams):
            found = inventory.get(upstream.service)
            if found is None:
                reason = f"service {upstream.service!r} is not in the registry"
            elif not found.mesh_endpoints:
                reason = f"service {upstream.service!r} has no sidecars in the registry yet"
            else:
                continue
            yield Problem(
                Kind.SIDECAR.value,
                name,
                f"spec.upstreams[{index}].service",
                f"{reason}; calls to it fail until one registers",
            )
