"""The history a replica keeps in memory: the last ``limit`` revisions, contiguous.

``history()`` and ``state_at()`` are answered from here (never from Consul), so they keep
working while Consul cannot be reached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from xds_server.store.consul_kv.records import KvSnapshot, Logged
from xds_server.store.errors import RevisionNotFound
from xds_server.store.interface import ConfigState, Document, HistoryEntry
from xds_server.store.planning import HistoryQuery


class HistoryPruned(RevisionNotFound):
    """A revision older than the history kept: its state can no longer be rebuilt."""

    def __init__(self, revision: int, latest: int, oldest: int) -> None:
        super().__init__(revision, latest)
        self.oldest = oldest
        self.args = (
            f"revision {revision} is no longer in history: states from revision {oldest}"
            f" to {latest} can be restored",
        )


class ReplicaHistory:
    """History in commit order: revisions ``floor + 1 … latest``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("history_limit must be at least 1")
        self.limit = limit
        self._log: list[Logged] = []
        self.floor = 0

    def clear(self) -> None:
        self._log = []
        self.floor = 0

    def append(self, revision: int, logged: Sequence[Logged]) -> None:
        """Add revision ``revision``'s entries; forget the revisions beyond the limit."""
        self._log.extend(logged)
        floor = revision - self.limit
        if floor > self.floor:
            self.floor = floor
            self._log = [item for item in self._log if item.entry.revision > floor]

    def adopt(self, snapshot: KvSnapshot, since: int) -> None:
        """Append the snapshot's history for revisions after ``since`` (the local revision).

        The log must stay contiguous up to ``snapshot.revision``: when a revision is missing
        (pruned while this replica was away), older history is dropped and states before the
        gap can no longer be rebuilt here."""
        start = since + 1
        for rev in range(since + 1, snapshot.revision + 1):
            if rev not in snapshot.history:
                start = rev + 1
        if start > since + 1:
            self._log = []
            self.floor = start - 1
        for rev in range(start, snapshot.revision + 1):
            self._log.extend(snapshot.history[rev])
        self.append(snapshot.revision, ())

    def newest_first(self, query: HistoryQuery) -> Iterator[HistoryEntry]:
        log = self._log
        end = len(log)
        while end > 0:  # revisions backwards, entries of one revision in commit order
            start = end - 1
            while start > 0 and log[start - 1].entry.revision == log[end - 1].entry.revision:
                start -= 1
            yield from (item.entry for item in log[start:end] if query.matches(item.entry))
            end = start

    def entries_upto(self, revision: int, current: ConfigState) -> list[HistoryEntry]:
        """The documents at ``revision``, rebuilt backwards from ``current``, as one synthetic
        "create" entry per document (what ``planning.replay`` needs)."""
        if revision < self.floor:
            if revision < 0:
                raise RevisionNotFound(revision, current.revision)
            raise HistoryPruned(revision, current.revision, self.floor)
        docs = dict(current.documents)
        for item in reversed(self._log):
            entry = item.entry
            if entry.revision <= revision:
                break
            key = (entry.kind, entry.name)
            if entry.operation == "create" or item.prior is None or entry.before is None:
                docs.pop(key, None)
            else:
                prior = item.prior
                docs[key] = Document(
                    entry.kind,
                    entry.name,
                    entry.before,
                    prior.revision,
                    prior.created_revision,
                    prior.updated_at,
                )
        return [
            _created(d) for d in sorted(docs.values(), key=lambda d: (d.revision, d.kind, d.name))
        ]


def _created(doc: Document) -> HistoryEntry:
    """A synthetic "create" entry that ``planning.replay`` turns back into ``doc``."""
    return HistoryEntry(
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
