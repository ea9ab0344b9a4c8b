"""Cross-document checks of subsets: route backends name subsets their service's
``ServicePolicy`` defines, and (against the inventory) subsets that hold no instance.

Errors: a backend's ``subset`` not defined by the service's policy; two backends of a rule
reaching one subset (one named, one through ``default_subset``: Envoy would get the same
cluster twice); a route attached to mesh upstreams reaching a subset (sidecars' clusters are
whole services).
Warnings: a subset that matches none of the service's instances answers 503 (or, with a
``default_subset``, falls back to it).
"""

from __future__ import annotations

from collections.abc import Iterator

from xds_server.model.config import Config
from xds_server.model.document import Kind
from xds_server.model.inventory import Inventory
from xds_server.model.problems import Problem
from xds_server.model.route import Backend
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.model.subsets import in_subset


def resolved_subset(backend: Backend, policy: ServicePolicySpec | None) -> str | None:
    """The subset ``backend`` sends to: its own, else the policy's default (``None``: every
    instance of the service)."""
    if backend.subset is not None:
        return backend.subset
    return policy.default_subset if policy is not None else None


def subset_errors(config: Config) -> Iterator[Problem]:
    for name, route in config.routes.items():
        for rule_index, rule in enumerate(route.spec.rules):
            seen: dict[str, int] = {}
            for index, backend in enumerate(rule.backends):
                where = f"spec.rules[{rule_index}].backends[{index}]"
                policy = config.service_policy(backend.service)
                if backend.subset is not None and (
                    policy is None or policy.subset(backend.subset) is None
                ):
                    defined = ", ".join(s.name for s in policy.subsets) if policy else ""
                    yield Problem(
                        Kind.ROUTE.value,
                        name,
                        f"{where}.subset",
                        f"service {backend.service!r} has no subset {backend.subset!r} "
                        f"(its ServicePolicy defines: {defined or 'none'})",
                    )
                    continue
                subset = resolved_subset(backend, policy)
                if subset is not None and route.spec.upstreams:
                    yield Problem(
                        Kind.ROUTE.value,
                        name,
                        f"{where}.{'subset' if backend.subset is not None else 'service'}",
                        f"a route attached to mesh upstreams sends to whole services: subset "
                        f"{subset!r} of {backend.service!r} is for edge listeners only",
                    )
                    continue
                target = backend.service if subset is None else f"{backend.service}~{subset}"
                if target in seen:
                    yield Problem(
                        Kind.ROUTE.value,
                        name,
                        f"{where}.subset",
                        f"backends[{seen[target]}] already sends to subset {subset!r} of "
                        f"{backend.service!r} (its default_subset)",
                    )
                seen.setdefault(target, index)


def subset_warnings(config: Config, inventory: Inventory) -> Iterator[Problem]:
    """Subsets that route backends reach but that hold no instance (only once the
    inventory has synced)."""
    for name, route in config.routes.items():
        for rule_index, rule in enumerate(route.spec.rules):
            for index, backend in enumerate(rule.backends):
                policy = config.service_policy(backend.service)
                subset_name = resolved_subset(backend, policy)
                subset = policy.subset(subset_name) if policy and subset_name else None
                service = inventory.get(backend.service)
                if subset is None or service is None or not service.endpoints:
                    continue  # no subset, or the "no instances" warning says it already
                if any(in_subset(subset, endpoint) for endpoint in service.endpoints):
                    continue  # health aside: failing instances come back
                assert policy is not None
                fallback = (
                    f"Envoy sends its requests to the default subset {policy.default_subset!r}"
                    if policy.default_subset not in (None, subset_name)
                    else "Envoy answers 503 until one appears"
                )
                field = "subset" if backend.subset is not None else "service"
                yield Problem(
                    Kind.ROUTE.value,
                    name,
                    f"spec.rules[{rule_index}].backends[{index}].{field}",
                    f"subset {subset_name!r} of service {backend.service!r} matches none of "
                    f"its {len(service.endpoints)} instance(s); {fallback}",
                )
