"""One snapshot per proxy group, with async watches.

Streams never poll: each waits on a future that the next ``set`` resolves. A burst of
``set`` calls between two turns of the event loop wakes each stream once, and the stream
reads the latest snapshot, so bursts coalesce by construction. A stream that knows its proxy
group waits for that group's snapshot only: a change that leaves its snapshot as it was
(another group changed, or a rebuild produced the same snapshot) does not wake it.

A proxy that names its zone (``node.locality.zone``) is served its group's snapshot as seen
from that zone (``zones``): derived on first use, once per (snapshot, zone), and dropped
with the group's snapshot. A view changes only when its group's snapshot does, so streams
keep waiting on their group.

Proxyless gRPC clients (``clients.ClientType.GRPC``) are served ``CacheState.grpc``, one
snapshot for all of them (with the same zonal views), instead of their group's.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from xds_server.cache import consistency, zones
from xds_server.cache.clients import ClientType
from xds_server.cache.snapshot import EMPTY_SNAPSHOT, Snapshot

#: Zones whose views are memoised (they come from clients: a bound against ever new ones;
#: a view for a zone beyond it is derived anew on every use, correct but slower).
_MAX_ZONES = 256
#: Group snapshots per zone whose view's serial is remembered (views' histories map group
#: snapshots' serials to their views' ones; as deep as ``Snapshot``'s own history).
_SERIALS_PER_ZONE = 16
#: Recent views per zone whose endpoints the next views may reuse (one per proxy group
#: that changes often, at least: each group's next view reuses its own previous one's).
_ENDPOINTS_PER_ZONE = 8


class _Zone:
    """What outlives one zone's views: their serials and endpoints, by group snapshot."""

    __slots__ = ("endpoints", "serials")

    def __init__(self) -> None:
        self.serials: OrderedDict[int, int] = OrderedDict()
        self.endpoints: OrderedDict[int, dict[str, zones.ZonalEndpoint]] = OrderedDict()

    def reuse(self, snapshot: Snapshot) -> dict[str, zones.ZonalEndpoint] | None:
        """The endpoints of the view of the snapshot ``snapshot`` was built from (the same
        group's previous one), else of the latest view."""
        if snapshot.base_serial is not None and snapshot.base_serial in self.endpoints:
            return self.endpoints[snapshot.base_serial]
        return next(reversed(self.endpoints.values()), None)

    def remember(
        self, snapshot: Snapshot, view: Snapshot, endpoints: dict[str, zones.ZonalEndpoint]
    ) -> None:
        self.serials[snapshot.serial] = view.serial
        while len(self.serials) > _SERIALS_PER_ZONE:
            self.serials.popitem(last=False)
        self.endpoints[snapshot.serial] = endpoints
        while len(self.endpoints) > _ENDPOINTS_PER_ZONE:
            self.endpoints.popitem(last=False)


class ZonalViews:
    """Every zone's view of the group snapshots in use, derived on first use.

    The views of a snapshot go when the snapshot does (a finaliser); what outlives them is
    small, per zone: recent views' endpoints (reused by the next views while unchanged) and
    serials (so a view's history names its ancestors' views).
    """

    def __init__(self) -> None:
        #: Per group snapshot serial and zone: the view, or None when the view is the group
        #: snapshot itself (never held here, or it could not go).
        self._views: dict[int, dict[str, Snapshot | None]] = {}
        self._zones: dict[str, _Zone] = {}

    def view(self, snapshot: Snapshot, zone: str) -> Snapshot:
        if not zone:
            return snapshot
        of_snapshot = self._views.get(snapshot.serial)
        if of_snapshot is not None and zone in of_snapshot:
            found = of_snapshot[zone]
            return snapshot if found is None else found
        memo = self._zones.get(zone)
        if memo is None:
            memo = _Zone()
            if len(self._zones) < _MAX_ZONES:
                self._zones[zone] = memo
        view, endpoints = zones.zonal_snapshot(
            snapshot, zone, reuse=memo.reuse(snapshot), serials=memo.serials
        )
        if zone not in self._zones:
            return view  # beyond the bound: not memoised
        memo.remember(snapshot, view, endpoints)
        if of_snapshot is None:
            of_snapshot = self._views[snapshot.serial] = {}
            weakref.finalize(snapshot, self._views.pop, snapshot.serial, None)
        of_snapshot[zone] = None if view is snapshot else view
        return view

    def memoised(self, snapshot: Snapshot) -> int:
        """How many zone views of ``snapshot`` are memoised (for tests)."""
        return len(self._views.get(snapshot.serial, {}))


@dataclass(frozen=True, slots=True)
class CacheState:
    """What the cache holds at one moment: a snapshot for every group."""

    default: Snapshot
    groups: Mapping[str, Snapshot]
    #: Monotonic time the state was set; the start of convergence measurements.
    set_at: float
    generation: int
    views: ZonalViews = field(default_factory=ZonalViews, repr=False, compare=False)
    #: What every proxyless gRPC client gets, whatever its group.
    grpc: Snapshot = EMPTY_SNAPSHOT

    def snapshot_for(
        self, group: str, zone: str = "", client: ClientType = ClientType.ENVOY
    ) -> Snapshot:
        """What a proxy of ``group`` in ``zone`` gets ("" = no zone: the group's snapshot);
        a gRPC client gets the gRPC snapshot (seen from its zone) whatever its group."""
        grpc = client is ClientType.GRPC
        snapshot = self.grpc if grpc else self.groups.get(group, self.default)
        return self.views.view(snapshot, zone) if zone else snapshot


class SnapshotCache:
    """Holds the current snapshot of every proxy group and wakes streams on change."""

    def __init__(self) -> None:
        self._views = ZonalViews()
        self._state = CacheState(
            EMPTY_SNAPSHOT, MappingProxyType({}), time.monotonic(), 0, self._views
        )
        self._changed: asyncio.Future[None] | None = None
        #: Per client type and proxy group: resolved when the snapshot they get is replaced.
        self._group_changed: dict[tuple[ClientType, str], asyncio.Future[None]] = {}

    @property
    def state(self) -> CacheState:
        return self._state

    def snapshot_for(
        self, group: str, zone: str = "", client: ClientType = ClientType.ENVOY
    ) -> Snapshot:
        return self._state.snapshot_for(group, zone, client)

    def set_snapshots(
        self,
        default: Snapshot,
        groups: Mapping[str, Snapshot] | None = None,
        *,
        grpc: Snapshot | None = None,
        check: bool = True,
    ) -> None:
        """Replace every group's snapshot at once.

        ``default`` is served to any group not named in ``groups``. With ``check`` (the
        default) an inconsistent snapshot raises :class:`consistency.InconsistentSnapshot`
        and nothing changes; tests that need to inject a bad resource pass ``check=False``.
        ``grpc`` is what gRPC clients get (``None``: the current one kept).
        """
        named = dict(groups or {})
        grpc_snapshot = self._state.grpc if grpc is None else grpc
        if check:
            consistency.check(default)
            checked = {id(default)}
            for snapshot in (*named.values(), grpc_snapshot):
                if id(snapshot) not in checked:  # groups often share one snapshot
                    consistency.check(snapshot)
                    checked.add(id(snapshot))
        previous = self._state
        self._state = CacheState(
            default=default,
            groups=MappingProxyType(named),
            set_at=time.monotonic(),
            generation=self._state.generation + 1,
            views=self._views,
            grpc=grpc_snapshot,
        )
        self._notify(previous)

    async def wait_for_change(self, generation: int) -> CacheState:
        """Return the cache state once its generation differs from ``generation``."""
        while self._state.generation == generation:
            if self._changed is None or self._changed.done():
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._changed)
        return self._state

    async def wait_for_snapshot(
        self, group: str, current: Snapshot, client: ClientType = ClientType.ENVOY
    ) -> CacheState:
        """Return the cache state once ``group``'s snapshot (as ``client`` gets it) is no
        longer ``current``."""
        key = (client, group)
        while self._state.snapshot_for(group, client=client) is current:
            waiter = self._group_changed.get(key)
            if waiter is None or waiter.done():
                waiter = asyncio.get_running_loop().create_future()
                self._group_changed[key] = waiter
            await asyncio.shield(waiter)
        return self._state

    def _notify(self, previous: CacheState | None = None) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None
        for key, waiter in list(self._group_changed.items()):
            client, group = key
            if previous is None or (
                self._state.snapshot_for(group, client=client)
                is not previous.snapshot_for(group, client=client)
            ):
                if not waiter.done():
                    waiter.set_result(None)
                del self._group_changed[key]
