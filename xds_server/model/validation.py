"""Checks across documents (and against the inventory) that single documents cannot make.

Errors make a config unacceptable: Envoy would reject it or it points at nothing. Warnings
are accepted but worth telling the operator (a backend with no instances answers 503).
Inventory-based warnings are skipped until the inventory has synced, when "no instances"
would mean "not read yet".

A write re-checks what it changed only: the per-route checks are memoised by the identity of
each route's entry and of every other kind's documents and the inventory
(``validation_memo``), and duplicate matches come from an index updated with the changed
routes (``validation_matches``). The report is the same as a check of everything afresh.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from xds_server.model.addresses import is_ip_literal
from xds_server.model.certificate import CertificateForm, CertificateSpec
from xds_server.model.config import Config, Entry
from xds_server.model.document import Kind
from xds_server.model.identity import IdentityMemo
from xds_server.model.inventory import Inventory, Service
from xds_server.model.listener import ListenerSpec
from xds_server.model.mesh_checks import mesh_errors, mesh_registry_warnings, mesh_warnings
from xds_server.model.pki import (
    CertificateSummary,
    PemError,
    check_bundle,
    check_chain,
    check_key_pair,
    check_private_key,
    expiry_findings,
)
from xds_server.model.problems import Problem
from xds_server.model.route import RetryRef
from xds_server.model.validation_grpc import grpc_policy_warnings, grpc_route_warnings
from xds_server.model.validation_matches import DuplicateMatches
from xds_server.model.validation_memo import RouteChecks
from xds_server.model.validation_mesh_routes import mesh_route_warnings
from xds_server.model.validation_streams import stream_errors, stream_warnings
from xds_server.model.validation_subsets import subset_errors, subset_warnings

#: Reads a file's text for certificate checks; raises ``OSError`` (or ``ValueError``) when
#: it cannot. Passed in by the caller, so validation itself does no I/O.
FileReader = Callable[[str], str]


@dataclass(slots=True)
class ValidationReport:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def introduced_since(self, before: ValidationReport) -> ValidationReport:
        """The problems of this report that ``before`` did not have: what a change caused."""
        old_errors, old_warnings = set(before.errors), set(before.warnings)
        return ValidationReport(
            [problem for problem in self.errors if problem not in old_errors],
            [problem for problem in self.warnings if problem not in old_warnings],
        )

    def about(self, kind: Kind | str, name: str) -> ValidationReport:
        """The problems located in one document."""
        return ValidationReport(
            [p for p in self.errors if p.kind == kind and p.name == name],
            [p for p in self.warnings if p.kind == kind and p.name == name],
        )


def validate_config(
    config: Config,
    inventory: Inventory,
    *,
    now: datetime.datetime | None = None,
    read_file: FileReader | None = None,
) -> ValidationReport:
    """Every cross-document error and warning of ``config``, sorted by document and field.

    With ``now``, certificates are checked for expiry; with ``read_file``, certificates given
    as file paths are read and checked like inline ones (the API passes both; translation
    needs neither).
    """
    report = ValidationReport()
    route_errors, route_warnings = _route_checks(config, inventory)
    report.errors.extend(route_errors)
    report.errors.extend(_overlapping_listeners(config))
    report.errors.extend(_tls_references(config))
    report.errors.extend(_edge_references(config))
    report.errors.extend(mesh_errors(config, now))
    report.errors.extend(stream_errors(config))
    for entry in config.certificates.values():
        _check_certificate(entry.name, entry.spec, now, read_file, report)
    report.warnings.extend(route_warnings)
    if inventory.synced:
        report.warnings.extend(_policies_without_service(config, inventory))
        report.warnings.extend(mesh_registry_warnings(config, inventory))
    report.warnings.extend(_duplicate_matches(config.routes))
    report.warnings.extend(_tls_warnings(config))
    report.warnings.extend(_edge_warnings(config))
    report.warnings.extend(mesh_warnings(config))
    report.warnings.extend(stream_warnings(config, inventory))
    report.warnings.extend(grpc_policy_warnings(config, inventory))
    report.errors.sort()
    report.warnings.sort()
    return report


def _each_route_errors(config: Config, inventory: Inventory) -> Iterator[Problem]:
    """The errors found on one route at a time (reading no other route)."""
    yield from _route_references(config)
    yield from _route_rule_references(config)
    yield from subset_errors(config)


def _each_route_warnings(config: Config, inventory: Inventory) -> Iterator[Problem]:
    """The warnings found on one route at a time (reading no other route)."""
    if inventory.synced:
        yield from _services_without_instances(config, inventory)
        yield from subset_warnings(config, inventory)
    redirecting = {name for name, e in config.listeners.items() if e.spec.https_redirect}
    yield from _routes_unused_on(config, redirecting, "redirects every request to https")
    metrics = {name for name, e in config.listeners.items() if e.spec.metrics is not None}
    yield from _routes_unused_on(config, metrics, "serves Envoy's metrics only")
    yield from mesh_route_warnings(config)
    yield from grpc_route_warnings(config, inventory)


#: Only the routes a write changed are checked again (``validation_memo``).
_route_checks = RouteChecks(_each_route_errors, _each_route_warnings)
#: An index of every route's matches, updated with the routes a write changed.
_duplicate_matches = DuplicateMatches()


def clear_memos() -> None:
    """Forget what the memos hold (tests: the next validation checks everything afresh)."""
    _route_checks.clear()
    _duplicate_matches.clear()


def _route_references(config: Config) -> Iterator[Problem]:
    for name, entry in config.routes.items():
        for index, listener in enumerate(entry.spec.listeners):
            if listener not in config.listeners:
                yield Problem(
                    Kind.ROUTE.value, name, f"spec.listeners[{index}]", f"no listener {listener!r}"
                )
        for index, rule in enumerate(entry.spec.rules):
            if isinstance(rule.retry, RetryRef) and rule.retry.policy not in config.retry_policies:
                yield Problem(
                    Kind.ROUTE.value,
                    name,
                    f"spec.rules[{index}].retry.policy",
                    f"no retry policy {rule.retry.policy!r}",
                )


def _count_unusable_addresses(service: Service) -> int:
    return sum(1 for endpoint in service.endpoints if not is_ip_literal(endpoint.address))


#: By ``Service`` object: unchanged services are the same objects, so a write re-checks only
#: what changed.
_unusable_addresses: IdentityMemo[Service, int] = IdentityMemo(_count_unusable_addresses)


def _instances_missing(service: str, inventory: Inventory) -> str | None:
    found = inventory.get(service)
    if found is None or not found.endpoints:
        return f"service {service!r} has no instances yet; Envoy answers 503 until one registers"
    unusable = _unusable_addresses(found)
    if unusable:
        return (
            f"service {service!r} has {unusable} instance(s) whose address is not an IP; "
            "Envoy cannot send to them"
        )
    return None


def _services_without_instances(config: Config, inventory: Inventory) -> Iterator[Problem]:
    for name, entry in config.routes.items():
        for rule_index, rule in enumerate(entry.spec.rules):
            where = f"spec.rules[{rule_index}]"
            for index, backend in enumerate(rule.backends):
                reason = _instances_missing(backend.service, inventory)
                if reason:
                    yield Problem(
                        Kind.ROUTE.value, name, f"{where}.backends[{index}].service", reason
                    )
            mirror = rule.filters.mirror
            if mirror is not None and (reason := _instances_missing(mirror.service, inventory)):
                yield Problem(Kind.ROUTE.value, name, f"{where}.filters.mirror.service", reason)


def _policies_without_service(config: Config, inventory: Inventory) -> Iterator[Problem]:
    for name in config.service_policies:
        if inventory.get(name) is None:
            yield Problem(
                Kind.SERVICE_POLICY.value,
                name,
                "name",
                f"service {name!r} is not in the registry; the policy applies once it appears",
            )


def _binds_overlap(a: ListenerSpec, b: ListenerSpec) -> bool:
    """Whether two listeners would claim the same socket on one Envoy."""
    if a.port != b.port:
        return False
    first, second = ipaddress.ip_address(a.address), ipaddress.ip_address(b.address)
    if first.version != second.version:
        return False
    return first == second or first.is_unspecified or second.is_unspecified


def _groups_overlap(a: ListenerSpec, b: ListenerSpec) -> bool:
    return not a.groups or not b.groups or bool(set(a.groups) & set(b.groups))


def _overlapping_listeners(config: Config) -> Iterator[Problem]:
    ordered = sorted(config.listeners.values(), key=lambda e: (e.created_revision, e.name))
    for index, later in enumerate(ordered):
        for earlier in ordered[:index]:
            if _binds_overlap(earlier.spec, later.spec) and _groups_overlap(
                earlier.spec, later.spec
            ):
                yield Problem(
                    Kind.LISTENER.value,
                    later.name,
                    "spec.port",
                    f"listener {earlier.name!r} already binds {earlier.spec.address} port "
                    f"{earlier.spec.port} for {_shared_groups(earlier.spec, later.spec)}",
                )


def _shared_groups(a: ListenerSpec, b: ListenerSpec) -> str:
    if not a.groups and not b.groups:
        return "every proxy group"
    shared = sorted(set(a.groups or b.groups) & set(b.groups or a.groups))
    return "proxy group(s) " + ", ".join(shared)


def _certificate_problem(config: Config, name: str, form: CertificateForm, what: str) -> str | None:
    """Why certificate ``name`` cannot serve as ``form`` (``None`` if it can)."""
    entry = config.certificates.get(name)
    if entry is None:
        return f"no certificate {name!r}"
    if entry.spec.form is not form:
        if form is CertificateForm.KEY_PAIR:
            return (
                f"certificate {name!r} is a CA bundle; {what} needs a certificate with its "
                "private key"
            )
        return f"certificate {name!r} holds a key pair; {what} needs a CA bundle (ca_bundle)"
    return None


def _tls_policy_problem(config: Config, name: str, side: str) -> str | None:
    entry = config.tls_policies.get(name)
    if entry is None:
        return f"no TLS policy {name!r}"
    if getattr(entry.spec, side) is None:
        return f"TLS policy {name!r} has no {side} part"
    return None


def _tls_references(config: Config) -> Iterator[Problem]:
    for name, listener in config.listeners.items():
        policy = listener.spec.tls_policy
        if policy is not None and (reason := _tls_policy_problem(config, policy, "downstream")):
            yield Problem(Kind.LISTENER.value, name, "spec.tls_policy", reason)
    for name, service_policy in config.service_policies.items():
        policy = service_policy.spec.tls_policy
        if policy is not None and (reason := _tls_policy_problem(config, policy, "upstream")):
            yield Problem(Kind.SERVICE_POLICY.value, name, "spec.tls_policy", reason)
    key_pair, bundle = CertificateForm.KEY_PAIR, CertificateForm.CA_BUNDLE
    for name, entry in config.tls_policies.items():
        wanted: list[tuple[str, str, CertificateForm, str]] = []
        downstream, upstream = entry.spec.downstream, entry.spec.upstream
        if downstream is not None:
            where = "spec.downstream"
            wanted += [
                (f"{where}.certificates[{i}]", c, key_pair, "a listener")
                for i, c in enumerate(downstream.certificates)
            ]
            wanted += [
                (f"{where}.sni[{i}].certificates[{j}]", c, key_pair, "a listener")
                for i, sni in enumerate(downstream.sni)
                for j, c in enumerate(sni.certificates)
            ]
            client = downstream.client_certificate
            if client is not None:
                wanted.append(
                    (f"{where}.client_certificate.ca", client.ca, bundle, "client verification")
                )
        if upstream is not None:
            if upstream.ca is not None:
                wanted.append(("spec.upstream.ca", upstream.ca, bundle, "service verification"))
            if upstream.client_certificate is not None:
                wanted.append(
                    (
                        "spec.upstream.client_certificate",
                        upstream.client_certificate,
                        key_pair,
                        "mutual TLS",
                    )
                )
        for where, certificate, form, what in wanted:
            if reason := _certificate_problem(config, certificate, form, what):
                yield Problem(Kind.TLS_POLICY.value, name, where, reason)


def _routes_unused_on(config: Config, listeners: set[str], why: str) -> Iterator[Problem]:
    """A warning for each route attached to one of ``listeners``, which do not route (``why``
    says what they do instead)."""
    for name, entry in config.routes.items():
        for index, listener in enumerate(entry.spec.listeners):
            if listener in listeners:
                yield Problem(
                    Kind.ROUTE.value,
                    name,
                    f"spec.listeners[{index}]",
                    f"listener {listener!r} {why}; this route is not used there",
                )


def _tls_warnings(config: Config) -> Iterator[Problem]:
    for name, policy in config.tls_policies.items():
        upstream = policy.spec.upstream
        if upstream is not None and upstream.ca is None:
            yield Problem(
                Kind.TLS_POLICY.value,
                name,
                "spec.upstream.ca",
                "no ca: Envoy does not verify the service's certificate (the traffic is "
                "encrypted, but to whoever answers)",
            )


def _check_certificate(
    name: str,
    spec: CertificateSpec,
    now: datetime.datetime | None,
    read_file: FileReader | None,
    report: ValidationReport,
) -> None:
    """Files (when a reader is given) and expiry (when ``now`` is). Reasons never quote the
    files' contents."""
    read = _FileChecks(name, read_file, report)
    try:
        summaries = _checked_certificates(spec, read)
    except PemError as error:
        report.errors.append(
            Problem(Kind.CERTIFICATE.value, name, f"spec.{read.field_name}", error.reason)
        )
        return
    if now is not None and summaries is not None:
        _check_expiry(name, spec, summaries, now, report)


class _FileChecks:
    """Reads a certificate's files, reporting one it cannot read as a warning; remembers the
    field last looked at (the one a ``PemError`` is about)."""

    def __init__(self, name: str, read_file: FileReader | None, report: ValidationReport) -> None:
        self.name = name
        self.read_file = read_file
        self.report = report
        self.field_name = "certificate"

    def __call__(self, field_name: str, path: str) -> str | None:
        assert self.read_file is not None
        self.field_name = field_name
        try:
            return self.read_file(path)
        except (OSError, ValueError) as error:
            detail = (
                error.strerror if isinstance(error, OSError) and error.strerror else "unreadable"
            )
            self.report.warnings.append(
                Problem(
                    Kind.CERTIFICATE.value,
                    self.name,
                    f"spec.{field_name}",
                    f"the server cannot read {path}: {detail}; it is not checked (Envoy must be "
                    "able to read it)",
                )
            )
            return None


def _checked_certificates(
    spec: CertificateSpec, read: _FileChecks
) -> tuple[CertificateSummary, ...] | None:
    """The certificates of ``spec``, checked (``PemError`` if they are not usable); ``None``
    when they are in files that are not read."""
    if spec.certificate is not None:
        return check_chain(spec.certificate)
    if spec.ca_bundle is not None:
        read.field_name = "ca_bundle"
        return check_bundle(spec.ca_bundle)
    if read.read_file is None:
        return None
    if spec.ca_bundle_file is not None:
        text = read("ca_bundle_file", spec.ca_bundle_file)
        return check_bundle(text) if text is not None else None
    if not (spec.certificate_file and spec.private_key_file):
        return None
    chain = read("certificate_file", spec.certificate_file)
    summaries = check_chain(chain) if chain is not None else None
    key = read("private_key_file", spec.private_key_file)
    if key is not None:
        check_private_key(key)
        if chain is not None:
            check_key_pair(chain, key)
    return summaries


def _check_expiry(
    name: str,
    spec: CertificateSpec,
    summaries: tuple[CertificateSummary, ...],
    now: datetime.datetime,
    report: ValidationReport,
) -> None:
    """Expired (an error unless allowed; for a bundle, only when every one is) and soon to
    expire (a warning). Expiry is about the certificates, wherever they are given."""
    kind = Kind.CERTIFICATE.value
    where = next(
        f"spec.{f}"
        for f in ("certificate", "certificate_file", "ca_bundle", "ca_bundle_file")
        if getattr(spec, f) is not None
    )
    is_bundle = spec.form is CertificateForm.CA_BUNDLE
    findings = expiry_findings(summaries, now, "CA certificate" if is_bundle else "certificate")
    all_expired = sum(f.expired for f in findings) == len(summaries)
    for finding in findings:
        if finding.expired and not spec.allow_expired and (not is_bundle or all_expired):
            report.errors.append(
                Problem(
                    kind, name, where, f"{finding.reason}; set allow_expired: true to use it anyway"
                )
            )
        else:
            report.warnings.append(Problem(kind, name, where, finding.reason))


def _listener_policies(
    config: Config, kind: Kind, policies: Mapping[str, Entry[Any]]
) -> Iterator[Problem]:
    """A policy's ``listeners`` exist, and no listener has two policies of one kind."""
    owner: dict[str, str] = {}
    for name, entry in sorted(policies.items(), key=lambda i: (i[1].created_revision, i[0])):
        for index, listener in enumerate(entry.spec.listeners):
            where = f"spec.listeners[{index}]"
            if listener not in config.listeners:
                yield Problem(kind.value, name, where, f"no listener {listener!r}")
            elif listener in owner:
                yield Problem(
                    kind.value,
                    name,
                    where,
                    f"listener {listener!r} already has {kind.value} {owner[listener]!r}; a "
                    "listener takes one (route rules can name others)",
                )
            else:
                owner[listener] = name


def _edge_references(config: Config) -> Iterator[Problem]:
    yield from _listener_policies(config, Kind.AUTH_POLICY, config.auth_policies)
    yield from _listener_policies(config, Kind.RATE_LIMIT_POLICY, config.rate_limit_policies)
    for name, policy in config.auth_policies.items():
        for index, provider in enumerate(policy.spec.providers):
            ca = provider.jwks.ca
            if ca is not None and (
                reason := _certificate_problem(
                    config, ca, CertificateForm.CA_BUNDLE, "JWKS server verification"
                )
            ):
                yield Problem(
                    Kind.AUTH_POLICY.value, name, f"spec.providers[{index}].jwks.ca", reason
                )


def _route_rule_references(config: Config) -> Iterator[Problem]:
    """A rule's auth and rate limit policies exist; claims need a listener with a token."""
    guarded = {
        listener for entry in config.auth_policies.values() for listener in entry.spec.listeners
    }
    for name, entry in config.routes.items():
        for index, rule in enumerate(entry.spec.rules):
            where = f"spec.rules[{index}]"
            auth = rule.auth
            if auth is not None and auth.policy is not None:
                if auth.policy not in config.auth_policies:
                    yield Problem(
                        Kind.ROUTE.value,
                        name,
                        f"{where}.auth.policy",
                        f"no auth policy {auth.policy!r}",
                    )
            elif auth is not None and auth.claims:
                unguarded = [n for n in entry.spec.listeners if n not in guarded]
                if unguarded:
                    yield Problem(
                        Kind.ROUTE.value,
                        name,
                        f"{where}.auth.claims",
                        "claims are checked on a token, but listener(s) "
                        f"{', '.join(map(repr, unguarded))} have no AuthPolicy: set auth.policy",
                    )
            limit = rule.rate_limit
            if (
                limit is not None
                and limit.policy is not None
                and limit.policy not in config.rate_limit_policies
            ):
                yield Problem(
                    Kind.ROUTE.value,
                    name,
                    f"{where}.rate_limit.policy",
                    f"no rate limit policy {limit.policy!r}",
                )


def _edge_warnings(config: Config) -> Iterator[Problem]:
    for name, policy in config.auth_policies.items():
        for index, provider in enumerate(policy.spec.providers):
            if provider.jwks.https and provider.jwks.ca is None:
                yield Problem(
                    Kind.AUTH_POLICY.value,
                    name,
                    f"spec.providers[{index}].jwks.ca",
                    "no ca: Envoy does not verify the JWKS server's certificate, so whoever "
                    "answers could supply the keys tokens are checked with",
                )
