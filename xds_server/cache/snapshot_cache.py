"""One snapshot per proxy group, with async watches.

Streams never poll: each waits on a future that the next ``set`` resolves. A burst of
``set`` calls between two turns of the event loop wakes each stream once, and the stream
reads the latest snapshot, so bursts coalesce by construction. A stream that knows its proxy
group waits for that group's snapshot only: a change that leaves its snapshot as it was
(another group changed, or a rebuild produced the same snapshot) does not wake it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from xds_server.cache import consistency
from xds_server.cache.snapshot import EMPTY_SNAPSHOT, Snapshot


@dataclass(frozen=True, slots=True)
class CacheState:
    """What the cache holds at one moment: a snapshot for every group."""

    default: Snapshot
    groups: Mapping[str, Snapshot]
    #: Monotonic time the state was set; the start of convergence measurements.
    set_at: float
    generation: int

    def snapshot_for(self, group: str) -> Snapshot:
        return self.groups.get(group, self.default)


class SnapshotCache:
    """Holds the current snapshot of every proxy group and wakes streams on change."""

    def __init__(self) -> None:
        self._state = CacheState(EMPTY_SNAPSHOT, MappingProxyType({}), time.monotonic(), 0)
        self._changed: asyncio.Future[None] | None = None
        #: Per proxy group: resolved when the snapshot that group gets is replaced.
        self._group_changed: dict[str, asyncio.Future[None]] = {}

    @property
    def state(self) -> CacheState:
        return self._state

    def snapshot_for(self, group: str) -> Snapshot:
        return self._state.snapshot_for(group)

    def set_snapshots(
        self,
        default: Snapshot,
        groups: Mapping[str, Snapshot] | None = None,
        *,
        check: bool = True,
    ) -> None:
        """Replace every group's snapshot at once.

        ``default`` is served to any group not named in ``groups``. With ``check`` (the
        default) an inconsistent snapshot raises :class:`consistency.InconsistentSnapshot`
        and nothing changes; tests that need to inject a bad resource pass ``check=False``.
        """
        named = dict(groups or {})
        if check:
            consistency.check(default)
            checked = {id(default)}
            for snapshot in named.values():
                if id(snapshot) not in checked:  # groups often share one snapshot
                    consistency.check(snapshot)
                    checked.add(id(snapshot))
        previous = self._state
        self._state = CacheState(
            default=default,
            groups=MappingProxyType(named),
            set_at=time.monotonic(),
            generation=self._state.generation + 1,
        )
        self._notify(previous)

    async def wait_for_change(self, generation: int) -> CacheState:
        """Return the cache state once its generation differs from ``generation``."""
        while self._state.generation == generation:
            if self._changed is None or self._changed.done():
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._changed)
        return self._state

    async def wait_for_snapshot(self, group: str, current: Snapshot) -> CacheState:
        """Return the cache state once ``group``'s snapshot is no longer ``current``."""
        while self._state.snapshot_for(group) is current:
            waiter = self._group_changed.get(group)
            if waiter is None or waiter.done():
                waiter = asyncio.get_running_loop().create_future()
                self._group_changed[group] = waiter
            await asyncio.shield(waiter)
        return self._state

    def _notify(self, previous: CacheState | None = None) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None
        for group, waiter in list(self._group_changed.items()):
            if previous is None or (
                self._state.snapshot_for(group) is not previous.snapshot_for(group)
            ):
                if not waiter.done():
                    waiter.set_result(None)
                del self._group_changed[group]
