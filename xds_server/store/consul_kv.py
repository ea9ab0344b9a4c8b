"""``--store consul-kv:PREFIX``: the config in Consul KV, shared by every replica.

Layout under ``PREFIX`` (values are JSON):

- ``PREFIX/revision``: ``{"revision": N, "commit": ID, "time": …}``, the config revision. Every
  commit replaces it with ``cas`` on the ModifyIndex this replica last saw, in the same
  ``/v1/txn`` as the documents and the history, so of two replicas committing on the same
  revision exactly one wins; the other's transaction fails whole, it catches up and re-plans
  (a precondition that no longer holds is then :class:`PreconditionFailed`, HTTP 412).
- ``PREFIX/docs/<kind>/<name>`` (kind and name percent-encoded): one document each.
- ``PREFIX/history/<revision, 20 digits>/<chunk>``: the revision's history entries, each with
  the document's previous revision, age and time so that older states can be rebuilt backwards
  from the current one. Only the last ``history_limit`` revisions are kept: each commit deletes
  the one that falls out, in the same transaction.

Every replica follows ``PREFIX/revision`` with a blocking query; when another replica commits,
it reads the new documents and the missing history in one read-only transaction and publishes
the new state, so ``watch()`` yields it on every replica.

Faults: when Consul cannot be reached (refused, timeout, 5xx, no leader, ACL denied) a commit
raises :class:`StoreUnavailable` and nothing was written (a transaction is atomic); ``current()``,
``history()`` and ``state_at()`` are served from memory and keep answering with the last known
config. The watch backs off with jitter and catches up once Consul is back. A commit whose
answer was lost (a timeout after sending) is confirmed by reading its revision back before it
is reported as failed.

A commit is one transaction: at most ``max_txn_ops`` operations (Consul's default is 128:
one per changed document, one per history chunk, plus two) and ``max_txn_bytes`` of request
(Consul's ``txn_max_req_len``, 512 KiB by default); a bigger commit is refused whole with
:class:`InvalidChange` (split it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xds_server.store import engine
from xds_server.store.base import (
    ConfigState,
    Document,
    HistoryEntry,
    InvalidChange,
    Operation,
    RevisionNotFound,
    StoreError,
    StoreUnavailable,
)
from xds_server.store.consul_http import (
    MAX_VALUE_SIZE,
    ConsulKv,
    ConsulKvSettings,
    KvEntry,
    kv_op,
)
from xds_server.store.core import BaseStore, Clock, StaleState

log = logging.getLogger(__name__)

#: Revisions of history kept in Consul KV (and in memory).
DEFAULT_HISTORY_LIMIT = 1000
#: Consul's ``txn_max_req_len`` default: the largest ``/v1/txn`` request body.
DEFAULT_MAX_TXN_BYTES = 512 * 1024
#: Room left in a history chunk for its envelope.
_CHUNK_BYTES = MAX_VALUE_SIZE - 4096

#: Revisions of history read ahead when catching up without knowing the latest revision.
_READ_AHEAD = 4

_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def normalise_prefix(prefix: str) -> str:
    """``"/xds/config/"`` → ``"xds/config"``; raises ``ValueError`` on an unusable prefix."""
    cleaned = prefix.strip().strip("/")
    if not cleaned or not _PREFIX.match(cleaned) or ".." in cleaned.split("/"):
        raise ValueError(
            f"consul-kv prefix {prefix!r}: use letters, digits, '.', '_', '-' and '/' "
            "(e.g. xds-server/config)"
        )
    return cleaned


class HistoryPruned(RevisionNotFound):
    """A revision older than the history kept: its state can no longer be rebuilt."""

    def __init__(self, revision: int, latest: int, oldest: int) -> None:
        super().__init__(revision, latest)
        self.oldest = oldest
        self.args = (
            f"revision {revision} is no longer in history: states from revision {oldest}"
            f" to {latest} can be restored",
        )


@dataclass(frozen=True, slots=True)
class _Prev:
    """A document as it was before a change: what rebuilding older states needs."""

    revision: int
    created_revision: int
    updated_at: str


@dataclass(frozen=True, slots=True)
class _Logged:
    entry: HistoryEntry
    prev: _Prev | None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one read-only transaction saw."""

    revision: int
    commit: str | None
    rev_index: int
    docs: dict[tuple[str, str], Document]
    #: revision → its entries in commit order (only the revisions that were read).
    history: dict[int, list[_Logged]]


class ConsulKvStore(BaseStore):
    """``ConsulKvStore("xds-server/config", ConsulKvSettings(...))``; see the module docstring."""

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
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        self.prefix = normalise_prefix(prefix)
        self.settings = settings or ConsulKvSettings()
        self.history_limit = history_limit
        self.max_txn_bytes = max_txn_bytes
        self._kv: ConsulKv | None = None
        self._follower: asyncio.Task[None] | None = None
        #: ModifyIndex of ``PREFIX/revision`` matching ``self._state`` (0: the key is absent).
        self._rev_index = 0
        #: History in commit order: contiguous revisions ``floor + 1 … latest``.
        self._log: list[_Logged] = []
        self._floor = 0
        #: Set when Consul's config went backwards (restored, wiped): writes are refused.
        self._diverged: str | None = None
        #: The last error of the watch (None while it is healthy); for readiness and logs.
        self.last_error: str | None = None
        #: Catch-ups after another replica's commit (instrumentation for tests).
        self.catch_ups = 0
        #: Commits of ours refused in a row because another replica wrote first.
        self._conflicts = 0

    # --- keys -------------------------------------------------------------------------------

    @property
    def revision_key(self) -> str:
        return f"{self.prefix}/revision"

    def _doc_key(self, kind: str, name: str) -> str:
        return f"{self.prefix}/docs/{_quote(kind)}/{_quote(name)}"

    def _history_prefix(self, revision: int) -> str:
        return f"{self.prefix}/history/{revision:020d}/"

    # --- lifecycle --------------------------------------------------------------------------

    async def _backend_open(self) -> ConfigState:
        kv = ConsulKv(self.settings)
        await kv.open()
        try:
            snapshot = await self._read(kv, [kv_op("get-tree", f"{self.prefix}/")])
        except BaseException:
            await kv.close()
            raise
        self._kv = kv
        self._diverged = None
        self.last_error = None
        self._rev_index = snapshot.rev_index
        self._log = []
        self._floor = 0
        self._adopt_history(snapshot, 0)
        await self._prune_old_history(kv, snapshot)
        self._follower = asyncio.create_task(self._follow(), name=f"consul-kv:{self.prefix}")
        log.info(
            "config store consul-kv:%s at %s: revision %d, %d documents",
            self.prefix,
            self.settings.base_url,
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

    async def _backend_write(self, planned: engine.Planned, base_revision: int) -> None:
        if self._diverged is not None:
            raise StoreUnavailable(self._diverged)
        base = self._state
        if base.revision != base_revision:  # cannot happen: the commit lock is held
            raise StaleState(base)
        kv = self._client()
        revision = planned.state.revision
        commit = uuid.uuid4().hex
        logged = [_Logged(e, _prev_of(base.get(e.kind, e.name))) for e in planned.entries]
        ops = self._write_ops(planned, logged, commit)
        try:
            outcome = await kv.txn(ops)
        except StoreUnavailable as error:
            # The request may have reached Consul before the answer was lost: look.
            applied, rev_index = await self._confirm(kv, revision, commit)
            if not applied:
                raise
            log.warning("commit %d: the answer was lost, but it was applied (%s)", revision, error)
            self._rev_index = rev_index
        else:
            if not outcome.ok:
                failed_ops = {index for index, _ in outcome.errors}
                if 0 in failed_ops:  # the cas on the revision key: another replica wrote
                    self._conflicts += 1
                    fresh = await self._catch_up(kv)
                    if self._conflicts > 2:  # busy replicas racing: spread the retries out
                        spread = 0.001 * 2 ** min(self._conflicts, 7)  # at most 128 ms
                        await asyncio.sleep(random.uniform(0, spread))
                    raise StaleState(fresh)
                raise StoreError(f"Consul refused the commit: {outcome.errors}")
            self._rev_index = next(
                (e.modify_index for e in outcome.entries if e.key == self.revision_key), 0
            )
        self._conflicts = 0
        self._append(revision, logged)

    def _write_ops(
        self, planned: engine.Planned, logged: Sequence[_Logged], commit: str
    ) -> list[Any]:
        revision = planned.state.revision
        time = planned.entries[0].time
        meta = _dumps({"revision": revision, "commit": commit, "time": time})
        ops: list[Any] = [kv_op("cas", self.revision_key, meta, index=self._rev_index)]
        for doc in planned.upserts:
            value = _dumps(_document_json(doc))
            _check_size(value, f"{doc.kind}/{doc.name}")
            ops.append(kv_op("set", self._doc_key(doc.kind, doc.name), value))
        for kind, name in planned.deletes:
            ops.append(kv_op("delete", self._doc_key(kind, name)))
        for number, chunk in enumerate(_chunks(logged)):
            value = _dumps({"revision": revision, "commit": commit, "entries": chunk})
            ops.append(kv_op("set", f"{self._history_prefix(revision)}{number:04d}", value))
        if revision - self.history_limit >= 1:
            ops.append(kv_op("delete-tree", self._history_prefix(revision - self.history_limit)))
        size = len(json.dumps(ops, separators=(",", ":")))
        if size > self.max_txn_bytes:
            raise InvalidChange(
                f"this commit needs a {size}-byte Consul transaction; Consul accepts"
                f" {self.max_txn_bytes} (txn_max_req_len): split it into smaller commits"
            )
        return ops

    async def _confirm(self, kv: ConsulKv, revision: int, commit: str) -> tuple[bool, int]:
        """Whether the commit ``commit`` (revision ``revision``) is in Consul KV, and the
        revision key's ModifyIndex if it is still ours (0: unknown, the next commit catches
        up first)."""
        try:
            outcome = await kv.txn(
                [
                    kv_op("get-tree", self.revision_key),
                    kv_op("get-tree", self._history_prefix(revision)),
                ]
            )
        except StoreError:
            return False, 0
        if not outcome.ok:
            return False, 0
        applied, rev_index = False, 0
        for entry in outcome.entries:
            if _loads(entry).get("commit") == commit:
                applied = True
                if entry.key == self.revision_key:
                    rev_index = entry.modify_index
        return applied, rev_index

    def _append(self, revision: int, logged: Sequence[_Logged]) -> None:
        self._log.extend(logged)
        floor = revision - self.history_limit
        if floor > self._floor:
            self._floor = floor
            self._log = [item for item in self._log if item.entry.revision > floor]

    # --- reading from Consul ----------------------------------------------------------------

    async def _read(self, kv: ConsulKv, ops: Sequence[Any]) -> _Snapshot:
        outcome = await kv.txn(ops)
        if not outcome.ok:
            raise StoreUnavailable(f"Consul refused a read of {self.prefix}: {outcome.errors}")
        return self._parse(outcome.entries)

    def _parse(self, entries: Iterable[KvEntry]) -> _Snapshot:
        revision, commit, rev_index = 0, None, 0
        docs: dict[tuple[str, str], Document] = {}
        chunks: dict[int, list[tuple[str, Any]]] = {}
        docs_prefix = f"{self.prefix}/docs/"
        history_prefix = f"{self.prefix}/history/"
        for entry in entries:
            if entry.key == self.revision_key:
                meta = _loads(entry)
                revision = _int(meta.get("revision"), entry.key)
                commit = meta.get("commit") if isinstance(meta.get("commit"), str) else None
                rev_index = entry.modify_index
            elif entry.key.startswith(docs_prefix):
                doc = _document(_loads(entry), entry.key)
                docs[doc.key] = doc
            elif entry.key.startswith(history_prefix):
                data = _loads(entry)
                chunks.setdefault(_int(data.get("revision"), entry.key), []).append(
                    (entry.key, data.get("entries"))
                )
        history = {
            rev: [
                _logged(rev, item, key)
                for key, items in sorted(parts, key=lambda part: part[0])
                for item in (items if isinstance(items, list) else _corrupt(key))
            ]
            for rev, parts in chunks.items()
        }
        if not revision and docs:
            raise StoreError(f"{self.revision_key} is missing but {docs_prefix} holds documents")
        return _Snapshot(revision, commit, rev_index, docs, history)

    def _adopt_history(self, snapshot: _Snapshot, since: int) -> None:
        """Append the snapshot's history for revisions after ``since`` (the local revision).

        The log must stay contiguous up to ``snapshot.revision``: when a revision is missing
        (pruned while this replica was away), older history is dropped and states before the
        gap can no longer be rebuilt here."""
        wanted = range(since + 1, snapshot.revision + 1)
        start = since + 1
        for rev in wanted:
            if rev not in snapshot.history:
                start = rev + 1
        if start > since + 1:
            self._log = []
            self._floor = start - 1
        for rev in range(start, snapshot.revision + 1):
            self._log.extend(snapshot.history[rev])
        self._append(snapshot.revision, ())

    async def _catch_up(self, kv: ConsulKv, hint: int | None = None) -> ConfigState:
        """Read the newer state and history another replica wrote; called under the commit
        lock. Returns the new state (not yet published)."""
        have = self._state.revision
        # Without a hint, guess: the history of a few revisions ahead costs nothing when
        # absent and saves a second round trip when present.
        target = hint if hint is not None and hint > have else have + _READ_AHEAD
        snapshot: _Snapshot | None = None
        for _ in range(3):
            ops = [kv_op("get-tree", self.revision_key), kv_op("get-tree", f"{self.prefix}/docs/")]
            missing = range(have + 1, target + 1)
            if len(missing) + len(ops) > kv.settings.max_txn_ops:
                ops.append(kv_op("get-tree", f"{self.prefix}/history/"))
                snapshot = await self._read(kv, ops)
                break
            ops.extend(kv_op("get-tree", self._history_prefix(rev)) for rev in missing)
            snapshot = await self._read(kv, ops)
            if snapshot.revision <= target:
                break
            target = snapshot.revision  # moved on while we read: read the rest too
        else:
            snapshot = await self._read(kv, [kv_op("get-tree", f"{self.prefix}/")])
        assert snapshot is not None
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
        self._adopt_history(snapshot, have)
        return ConfigState(snapshot.revision, snapshot.docs)

    async def _prune_old_history(self, kv: ConsulKv, snapshot: _Snapshot) -> None:
        """Best effort: delete history beyond the limit (left by a larger earlier limit)."""
        floor = snapshot.revision - self.history_limit
        stale = sorted(rev for rev in snapshot.history if rev <= floor)
        step = kv.settings.max_txn_ops
        for start in range(0, len(stale), step):
            batch = stale[start : start + step]
            try:
                await kv.txn([kv_op("delete-tree", self._history_prefix(rev)) for rev in batch])
            except StoreError as error:
                log.warning("could not prune old history under %s: %s", self.prefix, error)
                return

    # --- following other replicas -------------------------------------------------------------

    async def _follow(self) -> None:
        """Block on ``PREFIX/revision``; catch up whenever it moves. Consul's index rules: an
        index that goes backwards is taken as it is (never wait for one that will not come),
        0 is sent as 1, and errors back off with jitter (never a hot loop)."""
        kv = self._client()
        s = kv.settings
        index = self._rev_index
        delay = s.backoff_base
        while True:
            try:
                index, entry = await kv.get(self.revision_key, index=max(index, 1))
                await self._on_revision_key(kv, entry)
                if self.last_error is not None:
                    log.info("consul-kv:%s: following the config again", self.prefix)
                    self.last_error = None
                delay = s.backoff_base
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not isinstance(error, StoreError):
                    log.exception("consul-kv:%s: following the config failed", self.prefix)
                elif str(error) != self.last_error:
                    log.warning("consul-kv:%s: following the config failed: %s", self.prefix, error)
                self.last_error = str(error)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, s.backoff_max)

    async def _on_revision_key(self, kv: ConsulKv, entry: KvEntry | None) -> None:
        seen = entry.modify_index if entry is not None else 0
        assert self._lock is not None
        async with self._lock:  # no commit of ours runs meanwhile
            if not self._is_open or seen == self._rev_index:
                return  # nothing new, or our own commit
            hint = _loads(entry).get("revision") if entry is not None else 0
            state = await self._catch_up(kv, hint if isinstance(hint, int) else None)
            if state.revision != self._state.revision:
                self._publish(state)

    # --- history from memory ------------------------------------------------------------------

    async def _backend_history(self, query: engine.HistoryQuery) -> list[HistoryEntry]:
        return engine.take_page(self._newest_first(query), query.limit)

    def _newest_first(self, query: engine.HistoryQuery) -> Iterator[HistoryEntry]:
        log_ = self._log
        end = len(log_)
        while end > 0:  # revisions backwards, entries of one revision in commit order
            start = end - 1
            while start > 0 and log_[start - 1].entry.revision == log_[end - 1].entry.revision:
                start -= 1
            yield from (item.entry for item in log_[start:end] if query.matches(item.entry))
            end = start

    async def _backend_entries_upto(self, revision: int) -> Iterable[HistoryEntry]:
        """The documents at ``revision``, rebuilt backwards from the current state, as one
        synthetic "create" entry per document (what ``engine.replay`` needs)."""
        current = self._state
        if revision < self._floor:
            if revision < 0:
                raise RevisionNotFound(revision, current.revision)
            raise HistoryPruned(revision, current.revision, self._floor)
        docs = dict(current.documents)
        for item in reversed(self._log):
            entry = item.entry
            if entry.revision <= revision:
                break
            key = (entry.kind, entry.name)
            if entry.operation == "create" or item.prev is None or entry.before is None:
                docs.pop(key, None)
            else:
                prev = item.prev
                docs[key] = Document(
                    entry.kind,
                    entry.name,
                    entry.before,
                    prev.revision,
                    prev.created_revision,
                    prev.updated_at,
                )
        return [
            HistoryEntry(
                revision=doc.revision,
                kind=doc.kind,
                name=doc.name,
                operation="create",
                before=None,
                after=doc.spec,
                actor="",
                time=doc.updated_at,
                note=None,
                created_revision=doc.created_revision,
            )
            for doc in sorted(docs.values(), key=lambda d: (d.revision, d.kind, d.name))
        ]


# --- encoding -----------------------------------------------------------------------------------


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _check_size(value: bytes, what: str) -> None:
    if len(value) > MAX_VALUE_SIZE:
        raise InvalidChange(
            f"{what} is {len(value)} bytes stored; a Consul KV value holds at most {MAX_VALUE_SIZE}"
        )


def _prev_of(doc: Document | None) -> _Prev | None:
    return None if doc is None else _Prev(doc.revision, doc.created_revision, doc.updated_at)


def _document_json(doc: Document) -> dict[str, Any]:
    return {
        "kind": doc.kind,
        "name": doc.name,
        "spec": doc.spec,
        "revision": doc.revision,
        "created_revision": doc.created_revision,
        "updated_at": doc.updated_at,
    }


def _entry_json(seq: int, item: _Logged) -> dict[str, Any]:
    e = item.entry
    prev = item.prev
    return {
        "seq": seq,
        "kind": e.kind,
        "name": e.name,
        "operation": e.operation,
        "before": e.before,
        "after": e.after,
        "actor": e.actor,
        "time": e.time,
        "note": e.note,
        "created_revision": e.created_revision,
        "prev": None
        if prev is None
        else {
            "revision": prev.revision,
            "created_revision": prev.created_revision,
            "updated_at": prev.updated_at,
        },
    }


def _chunks(logged: Sequence[_Logged]) -> Iterator[list[dict[str, Any]]]:
    """History entries in chunks that each fit one Consul value."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for seq, item in enumerate(logged):
        data = _entry_json(seq, item)
        length = len(_dumps(data)) + 1
        if length > _CHUNK_BYTES:
            raise InvalidChange(
                f"the change of {item.entry.kind}/{item.entry.name} is too large for Consul KV"
                f" ({length} bytes of history; a value holds at most {MAX_VALUE_SIZE})"
            )
        if chunk and size + length > _CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(data)
        size += length
    if chunk:
        yield chunk


def _corrupt(key: str) -> Any:
    raise StoreError(f"Consul KV {key}: unexpected content")


def _loads(entry: KvEntry) -> Mapping[str, Any]:
    try:
        data = json.loads(entry.value or b"null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise StoreError(f"Consul KV {entry.key}: not a JSON object")
    return data


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreError(f"Consul KV {key}: invalid revision {value!r}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise StoreError(f"Consul KV {key}: expected a string, got {value!r}")
    return value


def _spec(value: Any, key: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise StoreError(f"Consul KV {key}: a spec is not a JSON object")


def _document(data: Mapping[str, Any], key: str) -> Document:
    spec = _spec(data.get("spec"), key)
    if spec is None:
        raise StoreError(f"Consul KV {key}: a document without a spec")
    return Document(
        _str(data.get("kind"), key),
        _str(data.get("name"), key),
        spec,
        _int(data.get("revision"), key),
        _int(data.get("created_revision"), key),
        _str(data.get("updated_at"), key),
    )


def _logged(revision: int, data: Any, key: str) -> _Logged:
    if not isinstance(data, dict):
        raise StoreError(f"Consul KV {key}: a history entry is not an object")
    operation: Operation
    op = data.get("operation")
    if op == "create" or op == "update" or op == "delete":
        operation = op
    else:
        raise StoreError(f"Consul KV {key}: unknown operation {op!r}")
    note = data.get("note")
    prev = data.get("prev")
    return _Logged(
        HistoryEntry(
            revision=revision,
            kind=_str(data.get("kind"), key),
            name=_str(data.get("name"), key),
            operation=operation,
            before=_spec(data.get("before"), key),
            after=_spec(data.get("after"), key),
            actor=_str(data.get("actor"), key),
            time=_str(data.get("time"), key),
            note=None if note is None else _str(note, key),
            created_revision=_int(data.get("created_revision"), key),
        ),
        None
        if not isinstance(prev, dict)
        else _Prev(
            _int(prev.get("revision"), key),
            _int(prev.get("created_revision"), key),
            _str(prev.get("updated_at"), key),
        ),
    )
