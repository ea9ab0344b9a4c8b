"""Checks across documents (and against the inventory) that single documents cannot make.

Errors make a config unacceptable: Envoy would reject it or it points at nothing. Warnings
are accepted but worth telling the operator (a backend with no instances answers 503).
Inventory-based warnings are skipped until the inventory has synced, when "no instances"
would mean "not read yet".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from xds_server.model.addresses import is_ip_literal
from xds_server.model.config import Config, Entry
from xds_server.model.document import Kind
from xds_server.model.inventory import Inventory
from xds_server.model.listener import ListenerSpec
from xds_server.model.problems import Problem
from xds_server.model.route import Match, RetryRef, RouteSpec


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


def validate_config(config: Config, inventory: Inventory) -> ValidationReport:
    """Every cross-document error and warning of ``config``, sorted by document and field."""
    report = ValidationReport()
    report.errors.extend(_route_references(config))
    report.errors.extend(_overlapping_listeners(config))
    if inventory.synced:
        report.warnings.extend(_services_without_instances(config, inventory))
        report.warnings.extend(_policies_without_service(config, inventory))
    report.warnings.extend(_duplicate_matches(config))
    report.errors.sort()
    report.warnings.sort()
    return report


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


def _instances_missing(service: str, inventory: Inventory) -> str | None:
    found = inventory.get(service)
    if found is None or not found.endpoints:
        return f"service {service!r} has no instances yet; Envoy answers 503 until one registers"
    unusable = sum(1 for endpoint in found.endpoints if not is_ip_literal(endpoint.address))
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


def match_signature(match: Match) -> tuple[object, ...]:
    """What a match selects, independent of how it is written (order of headers, trailing /)."""
    path = match.path
    if path is None or path.prefix is not None:
        prefix = path.prefix if path is not None and path.prefix is not None else "/"
        path_key: tuple[str, str] = ("prefix", prefix.rstrip("/") or "/")
    elif path.exact is not None:
        path_key = ("exact", path.exact)
    else:
        path_key = ("regex", path.regex or "")
    headers = sorted(
        (h.name.lower(), repr((h.exact, h.prefix, h.regex, h.present)), h.invert)
        for h in match.headers
    )
    queries = sorted((q.name, repr((q.exact, q.regex, q.present))) for q in match.query_params)
    return (path_key, match.method, repr(headers), repr(queries))


def _duplicate_matches(config: Config) -> Iterator[Problem]:
    """Warn when a later rule can never be chosen because an earlier one matches the same."""
    ordered: list[Entry[RouteSpec]] = sorted(
        config.routes.values(), key=lambda e: (e.created_revision, e.name)
    )
    first_seen: dict[tuple[object, ...], str] = {}
    for entry in ordered:
        for rule_index, rule in enumerate(entry.spec.rules):
            for match_index, match in enumerate(rule.matches):
                signature = match_signature(match)
                for listener in entry.spec.listeners:
                    for hostname in entry.spec.hostnames:
                        key = (listener, hostname, *signature)
                        where = f"route {entry.name!r} rules[{rule_index}]"
                        if key in first_seen and first_seen[key] != where:
                            yield Problem(
                                Kind.ROUTE.value,
                                entry.name,
                                f"spec.rules[{rule_index}].matches[{match_index}]",
                                f"{first_seen[key]} already has this match for {hostname!r} on "
                                f"listener {listener!r}; this one is never used",
                            )
                        first_seen.setdefault(key, where)
