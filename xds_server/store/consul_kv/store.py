"""``ConsulKvStore``: the config in Consul KV, shared by every replica (see the package)."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NoReturn

from xds_server.consul import MAX_TXN_OPS, Backoff, ConsulKv, ConsulSettings, KvEntry, kv_op
from xds_server.store import planning
from xds_server.store.backend import BaseStore, Clock, StaleState
from xds_server.store.consul_kv.calls import read_all, txn
from xds_server.store.consul_kv.following import Follower, read_newer
from xds_server.store.consul_kv.history import ReplicaHistory
from xds_server.store.consul_kv.keys import KeyLayout, normalise_prefix
from xds_server.store.consul_kv.records import KvSnapshot, Logged, Prior, loads
from xds_server.store.consul_kv.secrets import all_secrets, get_secret, put_secret
from xds_server.store.consul_kv.writing import Limits, confirm, write_ops
from xds_server.store.errors import StoreError, StoreUnavailable
from xds_server.store.interface import ConfigState, HistoryEntry

log = logging.getLogger(__name__)

#: Revisions of history kept in Consul KV (and in memory).
DEFAULT_HISTORY_LIMIT = 1000
#: Consul's ``txn_max_req_len`` default: the largest ``/v1/txn`` request body.
DEFAULT_MAX_TXN_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class ConsulKvSettings:
    """How the store uses Consul; durations in seconds."""

    #: Address, token, TLS and deadlines (``wait`` is the one of the watch on the revision).
    consul: ConsulSettings = field(default_factory=ConsulSettings)
    #: Connections to Consul (one blocking watch + writes + reads).
    max_connections: int = 4
    #: Operations per transaction Consul accepts (``MAX_TXN_OPS`` unless tuned).
    max_txn_ops: int = MAX_TXN_OPS
    #: Back-off of the watch after errors: first delay and cap (with jitter).
    backoff_base: float = 0.2
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if self.max_connections < 2:
            raise ValueError("max_connections must be at least 2 (a watch and a write)")
        if self.max_txn_ops < 8:
            raise ValueError("max_txn_ops must be at least 8")


class ConsulKvStore(BaseStore):
    """``ConsulKvStore("xds-server/config", ConsulKvSettings(...))``; see the package."""

    #: Replicas of a busy control plane may lose the race for a revision a few times in a row.
    max_conflict_retries = 10

    def __init__(
        self,
        prefix: str,
        settings: ConsulKvSettings | None = None,
        *,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        max_txn_bytes: int = DEFAULT_MAX_TXN_BYTES,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self._history = ReplicaHistory(history_limit)
        self.prefix = normalise_prefix(prefix)
        self.keys = KeyLayout(self.prefix)
        self.settings = settings or ConsulKvSettings()
        self._limits = Limits(self.settings.max_txn_ops, max_txn_bytes, history_limit)
        self._kv: ConsulKv | None = None
        self._follower: asyncio.Task[None] | None = None
        self._following: Follower | None = None
        #: ModifyIndex of ``PREFIX/revision`` matching ``self._state`` (0: the key is absent).
        self._rev_index = 0
        #: Set when Consul's config went backwards (restored, wiped): writes are refused.
        self._diverged: str | None = None
        #: Catch-ups after another replica's commit (instrumentation for tests).
        self.catch_ups = 0
        #: Commits of ours refused in a row because another replica wrote first.
        self._conflicts = 0

    @property
    def last_error(self) -> str | None:
        """The last error of the watch (None while it is healthy); for readiness and logs."""
        return self._following.last_error if self._following is not None else None

    # --- lifecycle --------------------------------------------------------------------------

    async def _backend_open(self) -> ConfigState:
        s = self.settings
        kv = ConsulKv(s.consul, s.max_connections)
        await kv.open()
        try:
            snapshot = await read_all(kv, self.keys, s.max_txn_ops)
        except BaseException:
            await kv.close()
            raise
        self._kv = kv
        self._diverged = None
        self._rev_index = snapshot.rev_index
        self._history.clear()
        self._history.adopt(snapshot, 0)
        await self._prune_old_history(kv, snapshot)
        backoff = Backoff(s.backoff_base, s.backoff_max)
        self._following = Follower(kv, self.keys, backoff, self._on_revision_key)
        self._follower = asyncio.create_task(
            self._following.run(self._rev_index), name=f"consul-kv:{self.prefix}"
        )
        log.info(
            "config store consul-kv:%s at %s: revision %d, %d documents",
            self.prefix,
            s.consul.base_url,
            snapshot.revision,
            len(snapshot.docs),
        )
        return ConfigState(snapshot.revision, snapshot.docs)

    async def _backend_close(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        kv, self._kv = self._kv, None
        if kv is not None:
            await kv.close()

    def _client(self) -> ConsulKv:
        if self._kv is None:
            raise StoreError("store is not open")
        return self._kv

    # --- writing ----------------------------------------------------------------------------

    async def _backend_write(self, planned: planning.Planned, base_revision: int) -> None:
        if self._diverged is not None:
            raise StoreUnavailable(self._diverged)
        base = self._state
        if base.revision != base_revision:  # cannot happen: the commit lock is held
            raise StaleState(base)
        kv = self._client()
        revision = planned.state.revision
        commit = uuid.uuid4().hex
        logged = [Logged(e, Prior.of(base.get(e.kind, e.name))) for e in planned.entries]
        ops = write_ops(self.keys, planned, logged, commit, self._rev_index, self._limits)
        try:
            outcome = await txn(kv, ops, self._limits.max_txn_ops)
        except StoreUnavailable as error:
            # The request may have reached Consul before the answer was lost: look.
            applied, rev_index = await confirm(
                kv, self.keys, revision, commit, self._limits.max_txn_ops
            )
            if not applied:
                raise
            log.warning("commit %d: the answer was lost, but it was applied (%s)", revision, error)
            self._rev_index = rev_index
        else:
            if not outcome.ok:
                if 0 in {index for index, _ in outcome.errors}:
                    await self._lost_the_race(kv)  # the cas on the revision key failed
                raise StoreError(f"Consul refused the commit: {outcome.errors}")
            self._rev_index = next(
                (e.modify_index for e in outcome.entries if e.key == self.keys.revision), 0
            )
        self._conflicts = 0
        self._history.append(revision, logged)

    async def _lost_the_race(self, kv: ConsulKv) -> NoReturn:
        """Another replica wrote first: catch up and have the commit re-planned."""
        self._conflicts += 1
        fresh = await self._catch_up(kv)
        if self._conflicts > 2:  # busy replicas racing: spread the retries out
            spread = 0.001 * 2 ** min(self._conflicts, 7)  # at most 128 ms
            await asyncio.sleep(random.uniform(0, spread))
        raise StaleState(fresh)

    async def _prune_old_history(self, kv: ConsulKv, snapshot: KvSnapshot) -> None:
        """Best effort: delete history beyond the limit (left by a larger earlier limit)."""
        floor = snapshot.revision - self._limits.history_limit
        stale = sorted(rev for rev in snapshot.history if rev <= floor)
        step = self._limits.max_txn_ops
        for start in range(0, len(stale), step):
            batch = stale[start : start + step]
            try:
                ops = [kv_op("delete-tree", self.keys.history_of(rev)) for rev in batch]
                await txn(kv, ops, step)
            except StoreError as error:
                log.warning("could not prune old history under %s: %s", self.prefix, error)
                return

    # --- following other replicas -------------------------------------------------------------

    async def _on_revision_key(self, entry: KvEntry | None) -> None:
        seen = entry.modify_index if entry is not None else 0
        assert self._lock is not None
        async with self._lock:  # no commit of ours runs meanwhile
            if not self._is_open or seen == self._rev_index:
                return  # nothing new, or our own commit
            hint = loads(entry).get("revision") if entry is not None else 0
            state = await self._catch_up(self._client(), hint if isinstance(hint, int) else None)
            if state.revision != self._state.revision:
                self._publish(state)

    async def _catch_up(self, kv: ConsulKv, hint: int | None = None) -> ConfigState:
        """Read the newer state and history another replica wrote; called under the commit
        lock. Returns the new state (not yet published)."""
        have = self._state.revision
        snapshot = await read_newer(kv, self.keys, have, hint, self._limits.max_txn_ops)
        if snapshot.revision < have:
            self._diverged = (
                f"the config in Consul KV under {self.prefix} went back from revision {have}"
                f" to {snapshot.revision} (restored or deleted?); this replica keeps serving"
                f" revision {have} and refuses writes until it is restarted"
            )
            log.error("%s", self._diverged)
            return self._state
        self.catch_ups += 1
        self._rev_index = snapshot.rev_index
        if snapshot.revision == have:
            return self._state
        self._history.adopt(snapshot, have)
        return ConfigState(snapshot.revision, snapshot.docs)

    # --- the secret side channel (``PREFIX/secrets/``, see ``secrets``) -------------------------

    async def _backend_get_secret(self, key: str) -> str | None:
        return await get_secret(self._client(), self.keys, key)

    async def _backend_put_secret(self, key: str, value: str, *, if_absent: bool) -> str:
        return await put_secret(
            self._client(), self.keys, key, value, self._limits.max_txn_ops, if_absent=if_absent
        )

    async def _backend_secrets(self) -> dict[str, str]:
        return await all_secrets(self._client(), self.keys, self._limits.max_txn_ops)

    # --- history from memory ------------------------------------------------------------------

    async def _backend_history(self, query: planning.HistoryQuery) -> list[HistoryEntry]:
        return planning.take_page(self._history.newest_first(query), query.limit)

    async def _backend_entries_upto(self, revision: int) -> Iterable[HistoryEntry]:
        return self._history.entries_upto(revision, self._state)
