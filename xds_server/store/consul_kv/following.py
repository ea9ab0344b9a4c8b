"""Following the other replicas: a blocking query on ``PREFIX/revision``, and the reads that
catch up when it moves (the new documents and the missing history in one transaction)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from xds_server.consul import Backoff, ConsulKv, KvEntry, kv_op
from xds_server.store.consul_kv.calls import get, read, read_all
from xds_server.store.consul_kv.keys import KeyLayout
from xds_server.store.consul_kv.records import KvSnapshot
from xds_server.store.errors import StoreError

log = logging.getLogger(__name__)

#: Revisions of history read ahead when catching up without knowing the latest revision.
READ_AHEAD = 4


class Follower:
    """Blocks on ``PREFIX/revision`` and hands every answer to ``on_key``.

    Consul's index rules: an index that goes backwards is taken as it is (never wait for one
    that will not come), 0 is sent as 1, and errors back off with jitter (never a hot loop).
    """

    def __init__(
        self,
        kv: ConsulKv,
        layout: KeyLayout,
        backoff: Backoff,
        on_key: Callable[[KvEntry | None], Awaitable[None]],
    ) -> None:
        self._kv = kv
        self._layout = layout
        self._backoff = backoff
        self._on_key = on_key
        #: The last error (None while healthy); for readiness and logs.
        self.last_error: str | None = None

    async def run(self, index: int) -> None:
        prefix = self._layout.prefix
        while True:
            try:
                index, entry = await get(self._kv, self._layout.revision, max(index, 1))
                await self._on_key(entry)
                if self.last_error is not None:
                    log.info("consul-kv:%s: following the config again", prefix)
                    self.last_error = None
                self._backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not isinstance(error, StoreError):
                    log.exception("consul-kv:%s: following the config failed", prefix)
                elif str(error) != self.last_error:
                    log.warning("consul-kv:%s: following the config failed: %s", prefix, error)
                self.last_error = str(error)
                await self._backoff.sleep()


async def read_newer(
    kv: ConsulKv, layout: KeyLayout, have: int, hint: int | None, max_ops: int
) -> KvSnapshot:
    """The documents and the history after revision ``have`` (``hint``: the latest, if known),
    in as few read-only transactions as it takes."""
    # Without a hint, guess: the history of a few revisions ahead costs nothing when
    # absent and saves a second round trip when present.
    target = hint if hint is not None and hint > have else have + READ_AHEAD
    for _ in range(3):
        ops = [kv_op("get-tree", layout.revision), kv_op("get-tree", layout.docs)]
        missing = range(have + 1, target + 1)
        if len(missing) + len(ops) > max_ops:
            ops.append(kv_op("get-tree", layout.history))
            return await read(kv, layout, ops, max_ops)
        ops.extend(kv_op("get-tree", layout.history_of(rev)) for rev in missing)
        snapshot = await read(kv, layout, ops, max_ops)
        if snapshot.revision <= target:
            return snapshot
        target = snapshot.revision  # moved on while we read: read the rest too
    return await read_all(kv, layout, max_ops)
