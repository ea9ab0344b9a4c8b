"""The values the Consul KV store keeps: documents, history chunks, and what a read saw.

A history entry is kept with the document's previous revision, age and time
(:class:`Prior`), so that older states can be rebuilt backwards from the current one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xds_server.consul import MAX_VALUE_SIZE, KvEntry
from xds_server.store.codec import (
    document_from_json,
    document_json,
    entry_from_json,
    entry_json,
    revision_of,
    text_of,
)
from xds_server.store.consul_kv.keys import KeyLayout
from xds_server.store.errors import InvalidChange, StoreError
from xds_server.store.interface import Document, HistoryEntry

#: Room left in a history chunk for its envelope.
CHUNK_BYTES = MAX_VALUE_SIZE - 4096


@dataclass(frozen=True, slots=True)
class Prior:
    """A document as it was before a change: what rebuilding older states needs."""

    revision: int
    created_revision: int
    updated_at: str

    @staticmethod
    def of(doc: Document | None) -> Prior | None:
        return None if doc is None else Prior(doc.revision, doc.created_revision, doc.updated_at)


@dataclass(frozen=True, slots=True)
class Logged:
    """A history entry and the document before it."""

    entry: HistoryEntry
    prior: Prior | None


@dataclass(frozen=True, slots=True)
class KvSnapshot:
    """What one read-only transaction saw."""

    revision: int
    commit: str | None
    rev_index: int
    docs: dict[tuple[str, str], Document]
    #: revision → its entries in commit order (only the revisions that were read).
    history: dict[int, list[Logged]]


def dumps(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def loads(entry: KvEntry) -> Mapping[str, Any]:
    try:
        data = json.loads(entry.value or b"null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise StoreError(f"Consul KV {entry.key}: not a JSON object")
    return data


def document_value(doc: Document) -> bytes:
    value = dumps(document_json(doc))
    if len(value) > MAX_VALUE_SIZE:
        raise InvalidChange(
            f"{doc.kind}/{doc.name} is {len(value)} bytes stored; a Consul KV value holds at"
            f" most {MAX_VALUE_SIZE}"
        )
    return value


def chunks(logged: Sequence[Logged]) -> Iterator[list[dict[str, Any]]]:
    """History entries in chunks that each fit one Consul value."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for seq, item in enumerate(logged):
        data = _logged_json(seq, item)
        length = len(dumps(data)) + 1
        if length > CHUNK_BYTES:
            raise InvalidChange(
                f"the change of {item.entry.kind}/{item.entry.name} is too large for Consul KV"
                f" ({length} bytes of history; a value holds at most {MAX_VALUE_SIZE})"
            )
        if chunk and size + length > CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(data)
        size += length
    if chunk:
        yield chunk


def parse(layout: KeyLayout, entries: Iterable[KvEntry]) -> KvSnapshot:
    """The snapshot of the keys a read returned."""
    revision, commit, rev_index = 0, None, 0
    docs: dict[tuple[str, str], Document] = {}
    parts: dict[int, list[tuple[str, Any]]] = {}
    for entry in entries:
        where = f"Consul KV {entry.key}"
        if entry.key == layout.revision:
            meta = loads(entry)
            revision = revision_of(meta.get("revision"), where)
            commit = meta.get("commit") if isinstance(meta.get("commit"), str) else None
            rev_index = entry.modify_index
        elif entry.key.startswith(layout.docs):
            doc = document_from_json(loads(entry), where)
            docs[doc.key] = doc
        elif entry.key.startswith(layout.history):
            data = loads(entry)
            parts.setdefault(revision_of(data.get("revision"), where), []).append(
                (entry.key, data.get("entries"))
            )
    history = {rev: _revision_history(rev, chunked) for rev, chunked in parts.items()}
    if not revision and docs:
        raise StoreError(f"{layout.revision} is missing but {layout.docs} holds documents")
    return KvSnapshot(revision, commit, rev_index, docs, history)


def _revision_history(revision: int, chunked: list[tuple[str, Any]]) -> list[Logged]:
    logged: list[Logged] = []
    for key, items in sorted(chunked, key=lambda part: part[0]):
        if not isinstance(items, list):
            raise StoreError(f"Consul KV {key}: unexpected content")
        logged.extend(_logged_from_json(revision, item, f"Consul KV {key}") for item in items)
    return logged


def _logged_json(seq: int, item: Logged) -> dict[str, Any]:
    data = entry_json(item.entry)
    del data["revision"]  # the chunk's
    prior = item.prior
    data["seq"] = seq
    data["prev"] = (
        None
        if prior is None
        else {
            "revision": prior.revision,
            "created_revision": prior.created_revision,
            "updated_at": prior.updated_at,
        }
    )
    return data


def _logged_from_json(revision: int, data: Any, where: str) -> Logged:
    entry = entry_from_json(revision, data, where)
    prev = data.get("prev")
    if not isinstance(prev, dict):
        return Logged(entry, None)
    prior = Prior(
        revision_of(prev.get("revision"), where),
        revision_of(prev.get("created_revision"), where),
        text_of(prev.get("updated_at"), where),
    )
    return Logged(entry, prior)
