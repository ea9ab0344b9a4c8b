"""``ServicePolicy`` subsets -> one EDS cluster and assignment per subset a route reaches.

Each subset is a cluster of its own, named ``<service>~<subset>`` (its EDS service name
too), as Consul makes one cluster per resolved target, so a weighted split between subsets
is exact. Its assignment holds the service's instances that match the subset's filter
(``model.subsets``). When the policy has a ``default_subset``, the default subset's other
instances follow at lower priorities (after every priority of the subset's own, datacenter
failover included), so Envoy itself fails over to them when the subset has no healthy
instance; without one, an empty or failing subset answers 503.

Pure and cached: an unchanged service and policy cost a cache lookup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache

from google.protobuf.message import Message

from xds_server.model.inventory import Endpoint, Service
from xds_server.model.route import Backend, Rule
from xds_server.model.service_policy import ServicePolicySpec, Subset
from xds_server.model.subsets import members, subset_cluster_name
from xds_server.translate.endpoints import MAX_PRIORITY, assignment

__all__ = [
    "cluster_name",
    "empty_subset_assignment",
    "subset_assignment",
    "subset_cluster_name",
    "subset_targets",
]


def _resolved(backend: Backend, policy: ServicePolicySpec | None) -> str | None:
    if backend.subset is not None:
        return backend.subset
    return policy.default_subset if policy is not None else None


def cluster_name(backend: Backend, policies: Mapping[str, ServicePolicySpec]) -> str:
    """The cluster a backend sends to: its subset's (or the policy's default subset's),
    else the service's own."""
    subset = _resolved(backend, policies.get(backend.service))
    return backend.service if subset is None else subset_cluster_name(backend.service, subset)


def subset_targets(
    rules: Iterable[Rule], policies: Mapping[str, ServicePolicySpec]
) -> list[tuple[str, str]]:
    """Every ``(service, subset)`` the rules' backends send to, sorted. A subset the
    service's policy does not define (validation refuses it: only a store edited behind the
    API's back has one) is listed too, and gets no instances: its routes answer 503."""
    found: set[tuple[str, str]] = set()
    for rule in rules:
        for backend in rule.backends:
            subset = _resolved(backend, policies.get(backend.service))
            if subset is not None:
                found.add((backend.service, subset))
    return sorted(found)


def _dense(endpoints: Iterable[Endpoint], first: int) -> Iterator[Endpoint]:
    """``endpoints`` with their priorities renumbered from ``first`` without gaps, order
    kept (Envoy's priorities run 0..N)."""
    members_list = list(endpoints)
    levels = sorted({endpoint.priority for endpoint in members_list})
    rank = {level: min(first + index, MAX_PRIORITY) for index, level in enumerate(levels)}
    for endpoint in members_list:
        yield dataclasses.replace(endpoint, priority=rank[endpoint.priority])


@lru_cache(maxsize=8192)
def _subset_assignment(service: Service, subset: Subset, fallback: Subset | None) -> Message:
    own = members(subset, service.endpoints)
    endpoints = list(_dense(own, 0))
    if fallback is not None:
        taken = {(e.address, e.port) for e in own}
        others = [
            e for e in members(fallback, service.endpoints) if (e.address, e.port) not in taken
        ]
        first = len({e.priority for e in own})
        endpoints.extend(_dense(others, first))
    return assignment(subset_cluster_name(service.name, subset.name), endpoints)


def subset_assignment(service: Service, policy: ServicePolicySpec, subset: str) -> Message:
    """The assignment of cluster ``<service>~<subset>`` (empty if the policy has no such
    subset)."""
    found = policy.subset(subset)
    if found is None:
        return empty_subset_assignment(service.name, subset)
    default = policy.default_subset
    fallback = policy.subset(default) if default is not None and default != subset else None
    return _subset_assignment(service, found, fallback)


def empty_subset_assignment(service: str, subset: str) -> Message:
    """For a subset that cannot be served (fail closed): Envoy answers 503."""
    return assignment(subset_cluster_name(service, subset), ())


def clear_caches() -> None:
    """Forget every memoised assignment (tests prove the caches change nothing)."""
    _subset_assignment.cache_clear()
