"""The pure planning of commits, shared by every backend so that they cannot diverge.

No I/O and no clock: a backend loads a :class:`ConfigState`, the functions here decide what a
commit does (or why it fails), and the backend persists the resulting :class:`Planned`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from xds_server.store.codec import canonical_json, load_spec
from xds_server.store.errors import InvalidChange, NotFound, PreconditionFailed, StoreError
from xds_server.store.interface import (
    Change,
    ConfigState,
    DocKey,
    Document,
    HistoryEntry,
    Operation,
    Spec,
)


@dataclass(frozen=True, slots=True)
class Op:
    """A checked write: ``spec`` (a private copy) or ``None`` for a delete.

    ``created_revision`` is set only by a rollback, to restore a document's original age."""

    kind: str
    name: str
    spec: Spec | None
    created_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    """What one commit writes. No entries: nothing to write, ``state`` is the old state."""

    state: ConfigState
    entries: tuple[HistoryEntry, ...]
    upserts: tuple[Document, ...]
    deletes: tuple[DocKey, ...]


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    kind: str | None = None
    name: str | None = None
    since_revision: int | None = None
    before_revision: int | None = None
    limit: int = 100

    def matches(self, entry: HistoryEntry) -> bool:
        return (
            (self.kind is None or entry.kind == self.kind)
            and (self.name is None or entry.name == self.name)
            and (self.since_revision is None or entry.revision > self.since_revision)
            and (self.before_revision is None or entry.revision < self.before_revision)
        )


def _check_preconditions(change: Change, doc: Document | None) -> None:
    actual = doc.etag if doc is not None else None
    if change.if_none_match and doc is not None:
        raise PreconditionFailed(change.kind, change.name, None, actual)
    if change.if_match is not None and (
        doc is None or (change.if_match != "*" and change.if_match != actual)
    ):
        raise PreconditionFailed(change.kind, change.name, change.if_match, actual)


def ops_from_changes(state: ConfigState, changes: Sequence[Change]) -> list[Op]:
    """Check ``changes`` against ``state``; raise on the first that cannot apply."""
    seen: set[DocKey] = set()
    ops: list[Op] = []
    for change in changes:
        for label, value in (("kind", change.kind), ("name", change.name)):
            if not isinstance(value, str) or not value:
                raise InvalidChange(f"a document's {label} must be a non-empty string")
        key = (change.kind, change.name)
        if key in seen:
            raise InvalidChange(f"{change.kind}/{change.name} appears twice in one commit")
        seen.add(key)
        doc = state.documents.get(key)
        _check_preconditions(change, doc)
        if change.spec is None:
            if doc is None:
                raise NotFound(change.kind, change.name)
            ops.append(Op(change.kind, change.name, None))
            continue
        if not isinstance(change.spec, Mapping):
            raise InvalidChange(f"{change.kind}/{change.name}: spec must be a JSON object")
        ops.append(Op(change.kind, change.name, load_spec(canonical_json(change.spec))))
    return ops


def ops_to_reach(current: ConfigState, target: ConfigState) -> list[Op]:
    """The writes that turn ``current``'s documents into exactly ``target``'s."""
    ops: list[Op] = []
    for key in sorted(current.documents.keys() | target.documents.keys()):
        want = target.documents.get(key)
        have = current.documents.get(key)
        if want is None:
            ops.append(Op(key[0], key[1], None))
        elif have is None or not _unchanged(have, want.created_revision, want.spec):
            ops.append(Op(key[0], key[1], want.spec, want.created_revision))
    return ops


def plan(
    state: ConfigState, ops: Sequence[Op], *, actor: str, note: str | None, time: str
) -> Planned:
    """Apply ``ops`` to ``state`` as revision ``state.revision + 1``, dropping no-ops."""
    commit = _Commit(state.revision + 1, actor, note, time)
    docs = dict(state.documents)
    entries: list[HistoryEntry] = []
    upserts: list[Document] = []
    deletes: list[DocKey] = []
    for op in ops:
        key = (op.kind, op.name)
        old = docs.get(key)
        if op.spec is None:
            if old is None:
                raise NotFound(op.kind, op.name)
            del docs[key]
            deletes.append(key)
            entries.append(commit.entry(op, "delete", old.spec, None, old.created_revision))
            continue
        doc = commit.upsert(op, op.spec, old)
        if doc is None:
            continue  # a no-op
        docs[key] = doc
        upserts.append(doc)
        operation: Operation = "create" if old is None else "update"
        before = old.spec if old is not None else None
        entries.append(commit.entry(op, operation, before, op.spec, doc.created_revision))
    if not entries:
        return Planned(state, (), (), ())
    return Planned(
        ConfigState(commit.revision, docs), tuple(entries), tuple(upserts), tuple(deletes)
    )


@dataclass(frozen=True, slots=True)
class _Commit:
    """What every change of one planned commit shares."""

    revision: int
    actor: str
    note: str | None
    time: str

    def upsert(self, op: Op, spec: Spec, old: Document | None) -> Document | None:
        """The document ``op`` writes, or None if it would not change ``old``."""
        if op.created_revision is not None:
            created = op.created_revision
        else:
            created = old.created_revision if old is not None else self.revision
        if old is not None and _unchanged(old, created, spec):
            return None
        return Document(op.kind, op.name, spec, self.revision, created, self.time)

    def entry(
        self, op: Op, operation: Operation, before: Spec | None, after: Spec | None, created: int
    ) -> HistoryEntry:
        return HistoryEntry(
            revision=self.revision,
            kind=op.kind,
            name=op.name,
            operation=operation,
            before=before,
            after=after,
            actor=self.actor,
            time=self.time,
            note=self.note,
            created_revision=created,
        )


def _unchanged(doc: Document, created_revision: int, spec: Mapping[str, object]) -> bool:
    return doc.created_revision == created_revision and canonical_json(doc.spec) == canonical_json(
        spec
    )


def replay(revision: int, entries: Iterable[HistoryEntry]) -> ConfigState:
    """The state at ``revision`` from history entries in commit order (oldest first).

    Only the last entry of each document matters, so a backend may pass just those."""
    docs: dict[DocKey, Document] = {}
    for entry in entries:
        if entry.revision > revision:
            break
        key = (entry.kind, entry.name)
        if entry.operation == "delete":
            docs.pop(key, None)
            continue
        if entry.after is None:
            raise StoreError(f"history of {entry.kind}/{entry.name} at {entry.revision}: no spec")
        docs[key] = Document(
            entry.kind, entry.name, entry.after, entry.revision, entry.created_revision, entry.time
        )
    return ConfigState(revision, docs)


def take_page(newest_first: Iterable[HistoryEntry], limit: int) -> list[HistoryEntry]:
    """Whole revisions, newest first, at most ``limit`` entries, except that the first
    revision is always returned whole however large it is.

    Lazy: stops reading ``newest_first`` (e.g. a database cursor) once the page is known.
    """
    page: list[HistoryEntry] = []
    group: list[HistoryEntry] = []  # the revision being read
    for entry in newest_first:
        if group and entry.revision != group[0].revision:
            page.extend(group)
            group = []
            if len(page) >= limit:
                return page
        if page and len(page) + len(group) + 1 > limit:
            return page  # this revision does not fit: leave it for the next page
        group.append(entry)
    page.extend(group)
    return page
