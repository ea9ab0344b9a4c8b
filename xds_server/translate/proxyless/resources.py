"""``grpc_resources(inventory, config)``: every registry service as a gRPC target.

For each service ``S``: listeners ``S`` and ``S:PORT`` (each port its instances listen on),
route configuration ``S``, cluster ``S`` and its assignment, and a cluster per subset the
target's routes send to (``S~subset``, as ``translate.subsets`` names them). Services that
routes send to but the registry lacks get a cluster without instances (calls fail with
UNAVAILABLE until some appear). Pure; each service's part is memoised by the identity of
its inputs (``units``), and the whole is put together from the parts reusing the last
translation's clusters, endpoint makers, sorted listeners and slots where they still hold
(the same rules as ``units``: a memo of what the last translation used, replaced whole).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xds_server.model.config import Config
from xds_server.model.inventory import Inventory, Service
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.translate.endpoints import load_assignment
from xds_server.translate.output import ProxyResources, resource_name
from xds_server.translate.proxyless import units
from xds_server.translate.proxyless.clusters import grpc_assignment, grpc_cluster
from xds_server.translate.proxyless.units import service_units, targets
from xds_server.translate.slots import NO_SLOTS, Maker, Slots, constant
from xds_server.translate.subsets import subset_assignment, subset_cluster_name

__all__ = ["grpc_plan", "grpc_resources", "targets"]


def grpc_resources(inventory: Inventory, config: Config) -> ProxyResources:
    """The resources every gRPC client gets (see the module docstring)."""
    skeleton, slots = grpc_plan(inventory, config)
    return dataclasses.replace(skeleton, endpoints=slots.fill(inventory))


#: A cluster's endpoint maker, by what it is made of: ``(service,)`` for a service's own
#: cluster, ``(service, subset, policy)`` for a subset's.
_MakerKey = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class _Memo:
    """What the last ``grpc_plan`` put together, for the next one to reuse."""

    #: Per unit (in order), its listeners, and those listeners sorted by name.
    unit_listeners: tuple[tuple[Any, ...], ...]
    listeners: tuple[Any, ...]
    #: Per cluster name, the policy it was made with and the cluster.
    clusters: Mapping[str, tuple[ServicePolicySpec | None, Any]]
    makers: Mapping[str, tuple[_MakerKey, Maker]]
    skeleton: ProxyResources
    pairs: tuple[tuple[str, Maker], ...]
    slots: Slots


_NOTHING = _Memo((), (), {}, {}, ProxyResources(), (), NO_SLOTS)
_LAST = _NOTHING


def clear_caches() -> None:
    """Forget the last plan and every memoised service unit (tests prove the memos change
    nothing; the cold benchmark starts from nothing)."""
    global _LAST
    _LAST = _NOTHING
    units.clear_caches()


def grpc_plan(inventory: Inventory, config: Config) -> tuple[ProxyResources, Slots]:
    """``grpc_resources`` without its endpoints, and the slots that make them (see
    ``translate.slots``). The rest reads the inventory's service names and each service's
    ``targets`` only, so it stays valid while those do."""
    global _LAST
    last = _LAST  # read once: another thread may publish its own meanwhile
    retry_policies = {name: entry.spec for name, entry in config.retry_policies.items()}
    policies = {name: entry.spec for name, entry in config.service_policies.items()}
    units = service_units(inventory, config, retry_policies, policies)
    unit_listeners = tuple(unit.listeners for unit in units)
    if _same(unit_listeners, last.unit_listeners):
        listeners = last.listeners
    else:
        listeners = tuple(sorted((m for each in unit_listeners for m in each), key=resource_name))
    services: set[str] = set()
    subsets: set[tuple[str, str]] = set()
    for unit in units:
        services.update(unit.services)
        subsets.update(unit.subsets)
    clusters: dict[str, tuple[ServicePolicySpec | None, Any]] = {}
    makers: dict[str, tuple[_MakerKey, Maker]] = {}
    endpoints: dict[str, tuple[str, Maker]] = {}
    for name in services:
        clusters[name] = _cluster(name, policies.get(name), last.clusters)
        endpoints[name] = (name, _maker(name, (name,), None, "", last.makers, makers))
    for name, subset in subsets:
        cluster = subset_cluster_name(name, subset)
        policy = policies.get(name)
        clusters[cluster] = _cluster(cluster, policy, last.clusters)
        key = (name, subset, policy)
        endpoints[cluster] = (name, _maker(cluster, key, policy, subset, last.makers, makers))
    skeleton = _skeleton(
        last.skeleton,
        tuple(clusters[n][1] for n in sorted(clusters)),
        listeners,
        tuple(unit.route for unit in units),
    )
    pairs = tuple(endpoints[n] for n in sorted(endpoints))
    slots = last.slots if pairs == last.pairs else Slots.of(pairs)
    _LAST = _Memo(unit_listeners, listeners, clusters, makers, skeleton, pairs, slots)
    return skeleton, slots


def _same(left: Sequence[object], right: Sequence[object]) -> bool:
    return len(left) == len(right) and all(map(operator.is_, left, right))


def _skeleton(
    last: ProxyResources,
    clusters: tuple[Any, ...],
    listeners: tuple[Any, ...],
    routes: tuple[Any, ...],
) -> ProxyResources:
    """The resources without endpoints: ``last`` itself (and its tuples) where unchanged."""
    if not _same(clusters, last.clusters):
        return ProxyResources(clusters=clusters, listeners=listeners, routes=routes)
    if listeners is last.listeners and _same(routes, last.routes):
        return last
    return ProxyResources(clusters=last.clusters, listeners=listeners, routes=routes)


def _cluster(
    name: str,
    policy: ServicePolicySpec | None,
    known: Mapping[str, tuple[ServicePolicySpec | None, Any]],
) -> tuple[ServicePolicySpec | None, Any]:
    hit = known.get(name)
    if hit is not None and hit[0] is policy:
        return hit
    return policy, grpc_cluster(name, policy)


def _maker(
    cluster: str,
    key: _MakerKey,
    policy: ServicePolicySpec | None,
    subset: str,
    known: Mapping[str, tuple[_MakerKey, Maker]],
    found: dict[str, tuple[_MakerKey, Maker]],
) -> Maker:
    """The endpoint maker of ``cluster`` (a service's own when ``key`` is ``(service,)``,
    else ``subset``'s of ``key[0]``), the very same object as last time for the same key."""
    hit = known.get(cluster)
    if hit is not None and hit[0] == key:  # identities first: cheap when unchanged
        found[cluster] = hit
        return hit[1]
    name = str(key[0])
    maker: Maker
    if len(key) == 1:
        maker = functools.partial(_service_assignment, name)
    elif policy is not None:
        maker = functools.partial(_subset_assignment, name, policy, subset)
    else:
        maker = constant(grpc_assignment(load_assignment(Service(cluster))))
    found[cluster] = (key, maker)
    return maker


def _service_assignment(name: str, service: Service | None) -> Any:
    return grpc_assignment(load_assignment(service or Service(name)))


def _subset_assignment(
    name: str, policy: ServicePolicySpec, subset: str, service: Service | None
) -> Any:
    return grpc_assignment(subset_assignment(service or Service(name), policy, subset))
