"""Per registry service, its own part of the gRPC clients' resources, memoised.

A service ``S`` brings its listeners (``S`` and ``S:PORT``: made of its ``targets``), its
route configuration (made of the ``Route`` documents whose hostnames name ``S``, the retry
policies they reference and the ``ServicePolicy`` of ``S`` and of their backends) and the
clusters those send to. At 5,000 services rebuilding all of it took ~300 ms per
translation; here each service's part is kept with the inputs it was made of and reused
while they are the very same objects (the sources hand over an unchanged ``Service`` as it
is, the config parser an unchanged document), so a one-service or one-route change rebuilds
only the services it touches.

Pure: a unit is a function of its inputs alone, compared by identity (a rebuilt but equal
input only costs a rebuild, giving equal messages). Bounded: the memo holds what the last
translation used, nothing else. Safe from several threads: a translation reads the last
memo once and publishes its own as a new object in one assignment, never changing one in
place (a race only costs rebuilding some units).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from xds_server.model.config import Config, Entry
from xds_server.model.identity import IdentityMemo
from xds_server.model.inventory import Inventory, Service
from xds_server.model.retry import RetryPolicySpec
from xds_server.model.route import RetryRef, RouteSpec
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.translate.endpoints import usable
from xds_server.translate.proxyless.listeners import api_listener
from xds_server.translate.proxyless.routes import (
    grpc_routes,
    plain_route_configuration,
    route_configuration,
)
from xds_server.translate.subsets import subset_targets


def targets(service: Service) -> tuple[str, ...]:
    """The listener names a gRPC client may ask for ``service`` by: ``S``, ``S:PORT``."""
    return _targets(service)


def _compute_targets(service: Service) -> tuple[str, ...]:
    ports = sorted({endpoint.port for endpoint in service.endpoints if usable(endpoint)})
    return (service.name, *(f"{service.name}:{port}" for port in ports))


#: Memoised by the service's identity (sources hand over unchanged services as they are).
_targets: IdentityMemo[Service, tuple[str, ...]] = IdentityMemo(_compute_targets)


def target_of(hostname: str) -> str:
    """The gRPC target a route's ``hostname`` names (``S`` for ``S`` and ``S:PORT``)."""
    return hostname.split(":", 1)[0]


@dataclass(frozen=True, slots=True, eq=False)
class Unit:
    """One registry service's part (see the module docstring), with what it was made of."""

    service: Service
    targets: tuple[str, ...]
    listeners: tuple[Any, ...]
    #: What ``route`` and the rest are made of: the service's policy, the attached route
    #: entries (in name order), their backends' policies and their retry policies.
    inputs: tuple[object, ...]
    route: Any
    #: The clusters the unit sends to: the service's own, then its rules' backends'.
    services: tuple[str, ...]
    #: The subsets the unit sends to (its rules' and its policy's default subset).
    subsets: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, eq=False)
class _Refs:
    """What one ``Route`` entry's gRPC translation reads besides itself."""

    entry: Entry[RouteSpec]
    #: The gRPC targets its hostnames name, each once, in hostname order.
    targets: tuple[str, ...]
    backends: tuple[str, ...]
    retries: tuple[str, ...]


def _refs(entry: Entry[RouteSpec]) -> _Refs:
    rules = entry.spec.rules
    return _Refs(
        entry=entry,
        targets=tuple(dict.fromkeys(target_of(h) for h in entry.spec.hostnames)),
        backends=tuple(sorted({b.service for rule in rules for b in rule.backends})),
        retries=tuple(
            sorted({rule.retry.policy for rule in rules if isinstance(rule.retry, RetryRef)})
        ),
    )


@dataclass(frozen=True, slots=True)
class _Memo:
    """The last translation's route references (by entry id: each holds its entry, so the
    id stays its own), the route entries per target, the documents those and the units'
    inputs were read from (held: their ids stay theirs) and the units (by service name)."""

    refs: Mapping[int, _Refs]
    by_target: Mapping[str, Sequence[Entry[RouteSpec]]]  # never changed once published
    documents: tuple[object, ...]
    units: Mapping[str, Unit]


_NOTHING = _Memo(refs={}, by_target={}, documents=(), units={})
_LAST = _NOTHING


def clear_caches() -> None:
    """Forget every memoised unit (tests prove the memo changes nothing)."""
    global _LAST
    _LAST = _NOTHING
    _targets.clear()


def _entries_by_target(
    config: Config, known: Mapping[int, _Refs], found: dict[int, _Refs]
) -> tuple[dict[str, list[Entry[RouteSpec]]], dict[int, _Refs]]:
    """Per target, the ``Route`` entries naming it in name order; ``found`` gets every
    entry's references (reused from ``known`` for an entry seen last time)."""
    by_target: dict[str, list[Entry[RouteSpec]]] = {}
    for _, entry in sorted(config.routes.items()):
        refs = known.get(id(entry))
        if refs is None or refs.entry is not entry:
            refs = _refs(entry)
        found[id(entry)] = refs
        for target in refs.targets:
            by_target.setdefault(target, []).append(entry)
    return by_target, found


def service_units(
    inventory: Inventory,
    config: Config,
    retry_policies: Mapping[str, RetryPolicySpec],
    policies: Mapping[str, ServicePolicySpec],
) -> tuple[Unit, ...]:
    """Every registry service's unit, in name order (``policies`` and ``retry_policies``
    are ``config``'s specs by name)."""
    global _LAST
    last = _LAST  # read once: another thread may publish its own meanwhile
    documents = (config.routes, config.retry_policies, config.service_policies)
    #: The targets whose route inputs may differ from the last translation's (``None``:
    #: any, the policies changed or there is no last translation).
    touched: frozenset[str] | None
    if _same(documents, last.documents):  # an inventory change
        by_target, refs = last.by_target, last.refs
        touched = frozenset()
    else:
        by_target, refs = _entries_by_target(config, last.refs, {})
        touched = None
        if len(last.documents) == 3 and _same(documents[1:], last.documents[1:]):
            touched = _touched(last.documents[0], config.routes, last.refs, refs)
    known = last.units
    units: dict[str, Unit] = {}
    services = inventory.services
    for name in sorted(services):
        attached = by_target.get(name, ())
        hit = known.get(name)
        service = services[name]
        if hit is not None and touched is not None and name not in touched:
            if hit.service is service:  # nothing it is made of changed
                units[name] = hit
                continue
            inputs = hit.inputs
        else:
            inputs = _inputs(name, attached, refs, retry_policies, policies)
        units[name] = _unit(name, service, attached, inputs, hit, retry_policies, policies)
    _LAST = _Memo(refs=refs, by_target=by_target, documents=documents, units=units)
    return tuple(units.values())


def _touched(
    before: object,
    after: Mapping[str, Entry[RouteSpec]],
    old: Mapping[int, _Refs],
    new: Mapping[int, _Refs],
) -> frozenset[str]:
    """The targets named by the ``Route`` entries added, removed or replaced between
    ``before`` (the last translation's routes, whose references are ``old``) and ``after``
    (``new``): only those targets' attached routes can differ."""
    routes = cast("Mapping[str, Entry[RouteSpec]]", before)
    found: set[str] = set()
    before_get = routes.get
    for name, entry in after.items():
        previous = before_get(name)
        if previous is not entry:
            found.update(new[id(entry)].targets)
            if previous is not None:
                found.update(old[id(previous)].targets)
    if len(routes) != len(after) or found:
        for name, previous in routes.items():
            if name not in after:
                found.update(old[id(previous)].targets)
    return frozenset(found)


def _inputs(
    name: str,
    attached: Sequence[Entry[RouteSpec]],
    refs: Mapping[int, _Refs],
    retry_policies: Mapping[str, RetryPolicySpec],
    policies: Mapping[str, ServicePolicySpec],
) -> tuple[object, ...]:
    """What a unit's route part reads, flattened (the entries fix how many policies follow,
    so two equal-length tuples line up field for field)."""
    if not attached:
        return (policies.get(name),)
    if len(attached) == 1:  # the usual case: its references are sorted and unique already
        one = refs[id(attached[0])]
        return (
            policies.get(name),
            attached[0],
            *(policies.get(backend) for backend in one.backends),
            *(retry_policies.get(retry) for retry in one.retries),
        )
    backends: set[str] = set()
    retries: set[str] = set()
    for entry in attached:
        found = refs[id(entry)]
        backends.update(found.backends)
        retries.update(found.retries)
    return (
        policies.get(name),
        *attached,
        *(policies.get(backend) for backend in sorted(backends)),
        *(retry_policies.get(retry) for retry in sorted(retries)),
    )


def _same(left: tuple[object, ...], right: tuple[object, ...]) -> bool:
    return len(left) == len(right) and all(map(operator.is_, left, right))


def _unit(
    name: str,
    service: Service,
    attached: Sequence[Entry[RouteSpec]],
    inputs: tuple[object, ...],
    hit: Unit | None,
    retry_policies: Mapping[str, RetryPolicySpec],
    policies: Mapping[str, ServicePolicySpec],
) -> Unit:
    """``hit`` if its inputs are ``service``'s targets and ``inputs``; else a unit reusing
    whichever half (listeners, route) still holds."""
    names = targets(service)
    same_targets = hit is not None and hit.targets == names
    same_inputs = hit is not None and _same(hit.inputs, inputs)
    if hit is not None and same_targets and same_inputs:
        return hit if hit.service is service else dataclasses.replace(hit, service=service)
    if hit is not None and same_targets:
        listeners = hit.listeners
    else:
        listeners = tuple(api_listener(target, name) for target in names)
    if hit is not None and same_inputs:
        return Unit(service, names, listeners, hit.inputs, hit.route, hit.services, hit.subsets)
    policy = policies.get(name)
    rules = [rule for entry in attached for rule in entry.spec.rules]
    if rules:
        route = route_configuration(name, grpc_routes(rules, retry_policies, policies), policies)
    else:
        route = plain_route_configuration(name, policy)
    sends_to = {b.service for rule in rules for b in rule.backends if b.weight > 0}
    sends_to.discard(name)
    subsets = set(subset_targets(rules, policies))
    if policy is not None and policy.default_subset is not None:  # the catch-all's
        subsets.add((name, policy.default_subset))
    return Unit(
        service=service,
        targets=names,
        listeners=listeners,
        inputs=inputs,
        route=route,
        services=(name, *sorted(sends_to)),
        subsets=tuple(sorted(subsets)),
    )
