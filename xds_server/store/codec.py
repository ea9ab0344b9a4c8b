"""The JSON of the store's values, one writing for every backend and the export file.

Specs are kept as canonical JSON (sorted keys, no spaces), which is also how a no-op change is
recognised. Documents and history entries become JSON objects with their fields' names; the
decoders check every field and say where a bad one was found (``where``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from xds_server.store.errors import InvalidChange, StoreError
from xds_server.store.interface import Document, HistoryEntry, Operation, Spec

#: A document's fields in the order an export lists them.
_DOCUMENT_FIELDS = ("kind", "name", "spec", "created_revision", "revision", "updated_at")
_ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(HistoryEntry))


def canonical_json(spec: Mapping[str, Any]) -> str:
    """The one serialisation of a spec: sorted keys, no spaces, no NaN. Equal specs give
    equal strings, which is how no-op changes are recognised."""
    try:
        return json.dumps(
            spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise InvalidChange(f"spec is not JSON: {exc}") from exc


def load_spec(text: str) -> Spec:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StoreError(f"stored spec is not a JSON object: {text[:80]!r}")
    return value


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: ``2024-05-01T12:00:00.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def document_json(doc: Document) -> dict[str, Any]:
    return {name: getattr(doc, name) for name in _DOCUMENT_FIELDS}


def entry_json(entry: HistoryEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in _ENTRY_FIELDS}


def document_from_json(data: Mapping[str, Any], where: str) -> Document:
    spec = spec_of(data.get("spec"), where)
    if spec is None:
        raise StoreError(f"{where}: a document without a spec")
    return Document(
        text_of(data.get("kind"), where),
        text_of(data.get("name"), where),
        spec,
        revision_of(data.get("revision"), where),
        revision_of(data.get("created_revision"), where),
        text_of(data.get("updated_at"), where),
    )


def entry_from_json(revision: int, data: Any, where: str) -> HistoryEntry:
    """A history entry of ``revision`` (the revision is kept outside the entry)."""
    if not isinstance(data, dict):
        raise StoreError(f"{where}: a history entry is not an object")
    note = data.get("note")
    return HistoryEntry(
        revision=revision,
        kind=text_of(data.get("kind"), where),
        name=text_of(data.get("name"), where),
        operation=operation_of(data.get("operation"), where),
        before=spec_of(data.get("before"), where),
        after=spec_of(data.get("after"), where),
        actor=text_of(data.get("actor"), where),
        time=text_of(data.get("time"), where),
        note=None if note is None else text_of(note, where),
        created_revision=revision_of(data.get("created_revision"), where),
    )


def operation_of(value: Any, where: str) -> Operation:
    if value == "create" or value == "update" or value == "delete":
        operation: Operation = value
        return operation
    raise StoreError(f"{where}: unknown operation {value!r}")


def revision_of(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreError(f"{where}: invalid revision {value!r}")
    return value


def text_of(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise StoreError(f"{where}: expected a string, got {value!r}")
    return value


def spec_of(value: Any, where: str) -> Spec | None:
    if value is None or isinstance(value, dict):
        return value
    raise StoreError(f"{where}: a spec is not a JSON object")
