"""Response bodies as JSON-ready dicts (their shapes are described in ``schemas``).

Every spec leaving the server passes through ``kinds.redact``, so write-only fields never
appear in a read, a list, a history entry or a write result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from xds_server.admin.checker import CheckedState
from xds_server.admin.kinds import ResourceKind, redact
from xds_server.admin.problem import problem_items
from xds_server.admin.writes import WriteOutcome
from xds_server.model import Problem
from xds_server.store import Document, HistoryEntry


def _spec(kind: str, spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    shown = redact(kind, spec)
    return dict(shown) if shown is not None else None


def document_view(kind: ResourceKind, doc: Document, checked: CheckedState) -> dict[str, Any]:
    """A stored document with its read-only fields. Its errors (only a document stored by
    another version can have any) are shown among the warnings."""
    problems = [*checked.errors_of(doc.kind, doc.name), *checked.warnings_of(doc.kind, doc.name)]
    view = {
        "kind": doc.kind,
        "name": doc.name,
        "spec": dict(kind.redact(doc.spec)),
        "revision": doc.revision,
        "updated_at": doc.updated_at,
        "warnings": problem_items(problems, located=False),
    }
    if kind.describe is not None:
        view["info"] = dict(kind.describe(doc.spec))
    return view


def history_view(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "revision": entry.revision,
        "kind": entry.kind,
        "name": entry.name,
        "operation": entry.operation,
        "before": _spec(entry.kind, entry.before),
        "after": _spec(entry.kind, entry.after),
        "actor": entry.actor,
        "time": entry.time,
        "note": entry.note,
    }


def _changed_warnings(outcome: WriteOutcome) -> list[Problem]:
    return [
        warning
        for entry in outcome.result.changed
        for warning in outcome.after.warnings_of(entry.kind, entry.name)
    ]


def write_view(
    outcome: WriteOutcome, documents: Iterable[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The answer to an apply, a rollback, or a dry run of any write."""
    view: dict[str, Any] = {
        "dry_run": outcome.dry_run,
        "base_revision": outcome.before.state.revision,
        "revision": outcome.result.revision,
        "changes": [
            {
                "kind": entry.kind,
                "name": entry.name,
                "operation": outcome.outcome_of(entry.kind, entry.name),
                "before": _spec(entry.kind, entry.before),
                "after": _spec(entry.kind, entry.after),
            }
            for entry in outcome.result.changed
        ],
        "warnings": problem_items(_changed_warnings(outcome)),
        "envoy": outcome.preview,
        "documents": list(documents) if documents is not None else None,
    }
    return view
