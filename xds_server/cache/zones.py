"""A proxy group's snapshot as the proxies of one zone see it: their own zone first.

Translation is per proxy group and knows nothing of zones beyond each endpoint's locality;
it gives the local datacenter priority 0 and the others 1 (and so on). A proxy that says
where it runs (``node.locality.zone``) gets the same snapshot with every
``ClusterLoadAssignment`` re-prioritised (``zonal_assignment``):

- localities of the local datacenter (priority 0) in the proxy's zone stay at 0,
- the local datacenter's other localities (other zones, or no zone at all) come next,
- the other datacenters follow, keeping their order,

numbered densely (Envoy's priorities run 0, 1, 2… without gaps). Envoy then sends everything
to the proxy's own zone while it is healthy and fails over by priority (its
overprovisioning factor spills traffic gradually as hosts turn unhealthy): to the other
zones, then to the other datacenters. An assignment with nothing in the proxy's zone keeps
its priorities, so it is the very resource the zone-less proxies get.

Only endpoints differ: clusters, listeners, routes and secrets are the group snapshot's own
objects (same bytes, same versions). Everything here is a pure function of its arguments;
memoising views per snapshot is the cache's job (``snapshot_cache``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2

from xds_server.cache.snapshot import Changes, Resource, Snapshot
from xds_server.cache.types import ENDPOINT

#: Stands for a snapshot that has no zonal view (never built, or forgotten) in a view's
#: history: no stream is ever in sync with it (serials start at 1).
UNKNOWN_SERIAL = -1


def _rank(priority: int, zone: str, own_zone: str) -> int:
    """Where a locality goes for a proxy in ``own_zone``, before numbering densely."""
    if priority == 0:
        return 0 if zone and zone == own_zone else 1
    return priority + 1


def zonal_assignment(assignment: Any, zone: str) -> Any:
    """``assignment`` (a ``ClusterLoadAssignment``) re-prioritised for a proxy in ``zone``;
    ``assignment`` itself when nothing changes. Never mutates its argument."""
    if not zone:
        return assignment
    localities = assignment.endpoints
    ranks = [_rank(int(lle.priority), str(lle.locality.zone), zone) for lle in localities]
    dense = {rank: number for number, rank in enumerate(sorted(set(ranks)))}
    new = [dense[rank] for rank in ranks]
    if all(int(lle.priority) == p for lle, p in zip(localities, new, strict=True)):
        return assignment
    result = endpoint_pb2.ClusterLoadAssignment()
    result.CopyFrom(assignment)
    for locality, priority in zip(result.endpoints, new, strict=True):
        locality.priority = priority
    # Lowest priority first, the translation's order kept within one priority (stable).
    result.endpoints.sort(key=lambda locality: locality.priority)
    return result


@dataclass(frozen=True, slots=True)
class ZonalEndpoint:
    """One assignment of a group snapshot and what it became in a zonal view: the next view
    of the same zone reuses ``zonal`` while the group's ``base`` resource is the same object
    (snapshots reuse a resource whose message did not change)."""

    base: Resource
    zonal: Resource
    message: Any


def zonal_snapshot(
    snapshot: Snapshot,
    zone: str,
    *,
    reuse: Mapping[str, ZonalEndpoint] | None = None,
    serials: Mapping[int, int] | None = None,
) -> tuple[Snapshot, dict[str, ZonalEndpoint]]:
    """The view of ``snapshot`` for proxies in ``zone``, and its endpoints (to pass as
    ``reuse`` for the next view of that zone). ``snapshot`` itself when no assignment
    changes (no endpoint in that zone, or no zone).

    ``serials`` maps group snapshots' serials to those of their views for ``zone``: the view
    records the group snapshot's history under those serials, so a stream in sync with the
    view of an ancestor is sent only what changed since (a zonal assignment changes only
    when its group assignment does). An ancestor without a known view is ``UNKNOWN_SERIAL``.
    """
    if not zone:
        return snapshot, {}
    reuse = reuse or {}
    serials = serials or {}
    messages = snapshot.messages.get(ENDPOINT, {})
    endpoints: dict[str, ZonalEndpoint] = {}
    for name, base in snapshot.of_type(ENDPOINT).items():
        known = reuse.get(name)
        if known is not None and known.base is base:
            endpoints[name] = known
            continue
        message = messages.get(name)
        zonal = zonal_assignment(message, zone) if message is not None else None
        if zonal is None or zonal is message:
            endpoints[name] = ZonalEndpoint(base, base, message)
        else:
            endpoints[name] = ZonalEndpoint(base, Resource.of(name, zonal), zonal)
    if all(e.zonal is e.base for e in endpoints.values()):
        return snapshot, endpoints  # nothing in this zone: the group's snapshot as it is
    view = Snapshot(
        resources=_replaced(snapshot.resources, {n: e.zonal for n, e in endpoints.items()}),
        messages=_replaced(snapshot.messages, {n: e.message for n, e in endpoints.items()}),
        base_serial=_mapped(snapshot.base_serial, serials),
        changes=snapshot.changes,
        history=_history(snapshot.history, serials),
    )
    return view, endpoints


def _replaced(by_type: Mapping[str, Mapping[str, Any]], items: Mapping[str, Any]) -> Any:
    replaced = dict(by_type)
    replaced[ENDPOINT] = MappingProxyType(dict(items))
    return MappingProxyType(replaced)


def _mapped(serial: int | None, serials: Mapping[int, int]) -> int | None:
    if serial is None:
        return None
    return serials.get(serial, UNKNOWN_SERIAL)


def _history(
    history: tuple[tuple[int, Changes], ...], serials: Mapping[int, int]
) -> tuple[tuple[int, Changes], ...]:
    return tuple((serials.get(base, UNKNOWN_SERIAL), changes) for base, changes in history)
