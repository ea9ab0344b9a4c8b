"""The config store's interface: value types and the ``ConfigStore`` protocol.

Storage-independent on purpose: the SQLite, in-memory and Consul KV stores all implement
:class:`ConfigStore` with the same semantics (their shared logic is ``backend.BaseStore``,
the pure decisions of a commit are ``planning``); the errors are in ``errors``.

The store is agnostic of spec contents: a spec is any JSON object; validation happens above.

Specs handed out by the store (in documents, history entries, commit results) are shared,
not copied, so reading the current config stays cheap. Treat them as read-only. Specs handed
*in* are copied (through canonical JSON) before they are kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol

#: A document's identity: ``(kind, name)``.
DocKey = tuple[str, str]
#: A spec: a JSON object.
Spec = dict[str, Any]
Operation = Literal["create", "update", "delete"]

_SECRET_KEY_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:"
)
MAX_SECRET_KEY_LENGTH: Final = 256


def check_secret_key(key: str) -> str:
    """A secret's key: ``/``-separated segments of letters, digits, ``.``, ``_``, ``-``, ``:``
    (``mesh/ca/builtin``); raises ``ValueError`` for anything else."""
    if (
        not isinstance(key, str)
        or not 0 < len(key) <= MAX_SECRET_KEY_LENGTH
        or not set(key) <= _SECRET_KEY_CHARS
        or any(segment in ("", ".", "..") for segment in key.split("/"))
    ):
        raise ValueError(f"invalid secret key {key!r}: use segments like mesh/ca/builtin")
    return key


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Document:
    """One operator document as stored."""

    kind: str
    name: str
    spec: Spec
    #: The revision of this document's last change.
    revision: int
    #: The revision that created it; "oldest first" precedence between conflicting documents.
    #: A rollback that brings a deleted document back restores its old value.
    created_revision: int
    #: RFC 3339, UTC (``2024-05-01T12:00:00.000Z``).
    updated_at: str

    @property
    def key(self) -> DocKey:
        return (self.kind, self.name)

    @property
    def etag(self) -> str:
        """A strong HTTP ETag: the revision of the last change, quoted."""
        return etag_of(self.revision)


def etag_of(revision: int) -> str:
    return f'"{revision}"'


def _by_age(doc: Document) -> tuple[int, str]:
    return (doc.created_revision, doc.name)


@dataclass(frozen=True, slots=True)
class ConfigState:
    """All documents at one revision. Immutable; equal states compare equal."""

    revision: int
    documents: Mapping[DocKey, Document]
    #: Documents by kind, oldest first: sorted on first use, not per state (a commit's dry
    #: run and the commit each make a state, and most states are never listed by kind).
    _by_kind: Mapping[str, tuple[Document, ...]] | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "documents", MappingProxyType(dict(self.documents)))

    def _grouped(self) -> Mapping[str, tuple[Document, ...]]:
        by_kind = self._by_kind
        if by_kind is None:
            grouped: dict[str, list[Document]] = {}
            for doc in self.documents.values():
                grouped.setdefault(doc.kind, []).append(doc)
            by_kind = MappingProxyType(
                {k: tuple(sorted(v, key=_by_age)) for k, v in grouped.items()}
            )
            object.__setattr__(self, "_by_kind", by_kind)  # the same value in any thread
        return by_kind

    @staticmethod
    def empty() -> ConfigState:
        return ConfigState(0, {})

    def get(self, kind: str, name: str) -> Document | None:
        return self.documents.get((kind, name))

    def of_kind(self, kind: str) -> tuple[Document, ...]:
        """Documents of one kind, oldest first (by ``created_revision``, then name)."""
        return self._grouped().get(kind, ())

    def kinds(self) -> frozenset[str]:
        return frozenset(self._grouped())


@dataclass(frozen=True, slots=True)
class Change:
    """One write in a commit: ``spec`` set = create or replace, ``None`` = delete."""

    kind: str
    name: str
    spec: Mapping[str, Any] | None
    #: An ETag the document must currently have; ``"*"``: it must exist.
    if_match: str | None = None
    #: Create only: the document must not exist.
    if_none_match: bool = False


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One document's change in one revision."""

    revision: int
    kind: str
    name: str
    operation: Operation
    before: Spec | None
    after: Spec | None
    actor: str
    #: RFC 3339, UTC; the same for every entry of a revision.
    time: str
    #: e.g. ``"rollback to 12"``.
    note: str | None
    #: The document's ``created_revision`` (after the change; for a delete, before it), so
    #: ``state_at`` reconstructs documents exactly.
    created_revision: int


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a commit did (or, for a dry run, would do).

    ``revision`` is the new revision; when nothing changed (every change was a no-op) it is the
    unchanged current revision and ``changed`` is empty. ``state`` is the config right after
    this commit, e.g. to answer with the stored document and its ETag.
    """

    revision: int
    changed: tuple[HistoryEntry, ...]
    state: ConfigState


# --- the interface ----------------------------------------------------------------------------


class ConfigStore(Protocol):
    """Durable, versioned operator config with history and optimistic concurrency.

    Every commit applies all of its changes in one transaction and bumps the global revision by
    exactly one, or changes nothing and raises. A change whose spec equals the stored one is a
    no-op: it is not recorded, and a commit made only of no-ops creates no revision.
    """

    async def open(self) -> None:
        """Connect, create or migrate the storage, load the latest state."""

    async def close(self) -> None:
        """Wait for an in-flight commit, release the storage, end every ``watch()``."""

    def current(self) -> ConfigState:
        """The latest committed state, from memory (never I/O)."""

    async def commit(
        self,
        changes: Sequence[Change],
        actor: str,
        *,
        note: str | None = None,
        dry_run: bool = False,
    ) -> CommitResult:
        """Apply ``changes`` atomically.

        Raises :class:`PreconditionFailed`, :class:`NotFound` (delete of a missing document),
        :class:`InvalidChange` or :class:`StoreUnavailable`; then nothing was written.
        ``dry_run`` checks everything against the current state and returns what would change.
        Once started, a commit completes even if the awaiting task is cancelled.
        """

    async def history(
        self,
        kind: str | None = None,
        name: str | None = None,
        *,
        since_revision: int | None = None,
        limit: int = 100,
        before_revision: int | None = None,
    ) -> list[HistoryEntry]:
        """History entries, newest revision first (within a revision, in commit order).

        ``since_revision`` and ``before_revision`` are exclusive bounds. A page holds at most
        ``limit`` entries and never splits a revision, so the next page is
        ``before_revision=page[-1].revision``; only a single revision with more than ``limit``
        entries makes a larger page (it is returned whole, alone).
        """

    async def state_at(self, revision: int) -> ConfigState:
        """The state as it was right after ``revision`` (0: empty), rebuilt from history.

        Raises :class:`RevisionNotFound` for a revision below 0 or above the latest."""

    async def rollback(
        self,
        to_revision: int,
        actor: str,
        *,
        note: str | None = None,
        dry_run: bool = False,
    ) -> CommitResult:
        """Commit a new revision whose documents equal those at ``to_revision`` (specs and
        ``created_revision``), creating, updating and deleting as needed; every entry is noted
        ``"rollback to N"``. Rolling back to the current config creates no revision."""

    async def reach(
        self,
        target: Callable[[ConfigState], ConfigState],
        actor: str,
        *,
        note: str | None = None,
        dry_run: bool = False,
    ) -> CommitResult:
        """Commit a new revision whose documents equal those of ``target(current)`` (specs
        and ``created_revision``), as ``rollback`` does for a past state. ``target`` is called
        on the state the commit is planned on (again if it is re-planned after a conflict)."""

    def watch(self) -> AsyncIterator[ConfigState]:
        """The current state at once, then each newer state after a commit.

        Latest-value semantics: a slow consumer skips intermediate states, it never queues
        them. The iterator ends when the store is closed.
        """

    # --- the secret side channel ----------------------------------------------------------
    # Values the server itself generates and must share between replicas and restarts (the
    # mesh CA's root and its key). Not documents: no revision, no history, no watch, left out
    # of exports unless asked for. Keys: see ``check_secret_key``; values: any string.

    async def get_secret(self, key: str) -> str | None:
        """The secret stored under ``key``, or ``None``."""

    async def put_secret_if_absent(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` holds a secret already; return what ``key`` holds
        now: ``value``, or what another writer (replica, process) stored first."""

    async def put_secret(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing what was there."""

    async def secrets(self) -> dict[str, str]:
        """Every secret, by key (for an export that asks for them)."""
