"""``BaseStore``, the shared backend: everything a storage does not have to know about.

Commit serialisation, preconditions and no-op detection (via ``planning``), conflict retries,
rollback, state publication and ``watch()``. A storage implements five primitives (the
``_backend_*`` methods); the memory, SQLite and Consul KV stores therefore behave alike.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from xds_server.store import planning
from xds_server.store.codec import format_time
from xds_server.store.errors import RevisionNotFound, StoreError, StoreUnavailable
from xds_server.store.interface import (
    Change,
    CommitResult,
    ConfigState,
    HistoryEntry,
    check_secret_key,
)

Clock = Callable[[], datetime]

#: How often a commit is re-planned when another writer got in first (see ``StaleState``).
MAX_CONFLICT_RETRIES = 5


class StaleState(Exception):
    """Raised by ``_backend_write`` when the stored revision is not the one the commit was
    planned on (another process wrote). Carries the fresh state; the commit is re-planned."""

    def __init__(self, state: ConfigState) -> None:
        super().__init__(f"stored revision is {state.revision}")
        self.state = state


def _utc_now() -> datetime:
    return datetime.now(UTC)


class BaseStore(ABC):
    """Implements :class:`~xds_server.store.interface.ConfigStore` on top of a storage."""

    #: Re-plans of one commit after ``StaleState`` before giving up (``StoreUnavailable``).
    max_conflict_retries = MAX_CONFLICT_RETRIES

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or _utc_now
        self._state = ConfigState.empty()
        self._is_open = False
        # Created in open(), so that they belong to the loop that uses the store.
        self._lock: asyncio.Lock | None = None
        self._changed = asyncio.Event()
        self._commits: set[asyncio.Task[CommitResult]] = set()

    # --- what a backend implements --------------------------------------------------------

    @abstractmethod
    async def _backend_open(self) -> ConfigState:
        """Prepare the storage and return the latest committed state."""

    @abstractmethod
    async def _backend_close(self) -> None: ...

    @abstractmethod
    async def _backend_write(self, planned: planning.Planned, base_revision: int) -> None:
        """Persist ``planned`` in one transaction, durably, if the stored revision is still
        ``base_revision``; else raise :class:`StaleState`. On failure nothing is written."""

    @abstractmethod
    async def _backend_history(self, query: planning.HistoryQuery) -> list[HistoryEntry]:
        """``query``'s page, newest first (see ``planning.take_page``)."""

    @abstractmethod
    async def _backend_entries_upto(self, revision: int) -> Iterable[HistoryEntry]:
        """History entries up to ``revision`` in commit order; only the last one of each
        document is needed (see ``planning.replay``)."""

    @abstractmethod
    async def _backend_get_secret(self, key: str) -> str | None: ...

    @abstractmethod
    async def _backend_put_secret(self, key: str, value: str, *, if_absent: bool) -> str:
        """Store ``value`` (``if_absent``: only when ``key`` is free, atomically against every
        other writer of the storage) and return what ``key`` holds afterwards."""

    @abstractmethod
    async def _backend_secrets(self) -> dict[str, str]: ...

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._is_open:
            raise StoreError("store is already open")
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._state = await self._backend_open()
        self._is_open = True

    async def close(self) -> None:
        if not self._is_open or self._lock is None:
            return
        async with self._lock:  # lets an in-flight commit finish
            self._is_open = False
            await self._backend_close()
        self._changed.set()  # ends every watch()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _require_open(self) -> None:
        if not self._is_open:
            raise StoreError("store is not open")

    # --- reading --------------------------------------------------------------------------

    def current(self) -> ConfigState:
        self._require_open()
        return self._state

    async def history(
        self,
        kind: str | None = None,
        name: str | None = None,
        *,
        since_revision: int | None = None,
        limit: int = 100,
        before_revision: int | None = None,
    ) -> list[HistoryEntry]:
        self._require_open()
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = planning.HistoryQuery(kind, name, since_revision, before_revision, limit)
        return await self._backend_history(query)

    async def state_at(self, revision: int) -> ConfigState:
        self._require_open()
        latest = self._state
        if revision == latest.revision:
            return latest
        if revision < 0 or revision > latest.revision:
            raise RevisionNotFound(revision, latest.revision)
        if revision == 0:
            return ConfigState.empty()
        return planning.replay(revision, await self._backend_entries_upto(revision))

    def watch(self) -> AsyncIterator[ConfigState]:
        self._require_open()
        return self._watch()

    async def _watch(self) -> AsyncIterator[ConfigState]:
        last: int | None = None
        while self._is_open:
            state = self._state
            if state.revision != last:
                last = state.revision
                yield state
                continue
            await self._changed.wait()

    def _publish(self, state: ConfigState) -> None:
        """Make ``state`` current and wake every watcher (each waits on the event that was
        current when it looked, so replacing it never loses a wake-up)."""
        self._state = state
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- the secret side channel (see ``ConfigStore``) ------------------------------------

    async def get_secret(self, key: str) -> str | None:
        self._require_open()
        return await self._backend_get_secret(check_secret_key(key))

    async def put_secret_if_absent(self, key: str, value: str) -> str:
        self._require_open()
        return await self._backend_put_secret(
            check_secret_key(key), _secret_value(value), if_absent=True
        )

    async def put_secret(self, key: str, value: str) -> None:
        self._require_open()
        await self._backend_put_secret(check_secret_key(key), _secret_value(value), if_absent=False)

    async def secrets(self) -> dict[str, str]:
        self._require_open()
        return await self._backend_secrets()

    # --- writing --------------------------------------------------------------------------

    async def commit(
        self,
        changes: Sequence[Change],
        actor: str,
        *,
        note: str | None = None,
        dry_run: bool = False,
    ) -> CommitResult:
        changes = tuple(changes)
        return await self._run_commit(
            lambda state: planning.ops_from_changes(state, changes), actor, note, dry_run
        )

    async def rollback(
        self,
        to_revision: int,
        actor: str,
        *,
        note: str | None = None,
        dry_run: bool = False,
    ) -> CommitResult:
        target = await self.state_at(to_revision)  # history never changes: read it unlocked
        label = f"rollback to {to_revision}" + (f": {note}" if note else "")
        return await self.reach(lambda _: target, actor, note=label, dry_run=dry_run)

    async def reach(
        self,
        target: Callable[[ConfigState], ConfigState],
        actor: str,
        *,
        note: str | None = None,
        dry_run: bool = False,
    ) -> CommitResult:
        return await self._run_commit(
            lambda state: planning.ops_to_reach(state, target(state)), actor, note, dry_run
        )

    async def _run_commit(
        self,
        make_ops: Callable[[ConfigState], Sequence[planning.Op]],
        actor: str,
        note: str | None,
        dry_run: bool,
    ) -> CommitResult:
        self._require_open()
        if not isinstance(actor, str) or not actor:
            raise ValueError("actor must be a non-empty string")

        def plan(state: ConfigState) -> planning.Planned:
            time = format_time(self._clock())
            return planning.plan(state, make_ops(state), actor=actor, note=note, time=time)

        # Shielded: once a write has started, cancelling the caller (a client that went away)
        # must not leave the storage committed but the published state behind.
        task = asyncio.ensure_future(self._locked_commit(plan, dry_run))
        self._commits.add(task)
        task.add_done_callback(_forget(self._commits))
        return await asyncio.shield(task)

    async def _locked_commit(
        self, plan: Callable[[ConfigState], planning.Planned], dry_run: bool
    ) -> CommitResult:
        assert self._lock is not None
        async with self._lock:
            self._require_open()
            for _ in range(self.max_conflict_retries):
                state = self._state
                planned = plan(state)
                result = CommitResult(planned.state.revision, planned.entries, planned.state)
                if dry_run or not planned.entries:
                    return result
                try:
                    await self._backend_write(planned, state.revision)
                except StaleState as stale:
                    self._publish(stale.state)
                    continue
                self._publish(planned.state)
                return result
            raise StoreUnavailable("too many concurrent writers to the same store")


def _secret_value(value: str) -> str:
    if not isinstance(value, str):
        raise ValueError("a secret is a string")
    return value


def _forget(
    tasks: set[asyncio.Task[CommitResult]],
) -> Callable[[asyncio.Task[CommitResult]], None]:
    def done(task: asyncio.Task[CommitResult]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away does not log "never retrieved"

    return done
