"""``xds-server validate -f FILE``: check documents offline, as the server would.

Parses the file (a YAML stream or JSON), validates each document against the model, then the
documents together (references between them, overlapping listeners) — the checks a write
through the REST API makes, minus those that need the server: the documents already stored
and the registry's services. No server is contacted; the text is read as the admin API reads
a body (``model.text``), and problems are shown as its ``errors`` are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xds_server.model import Config, InvalidDocuments, Inventory, Problem, validate_config
from xds_server.model.text import (
    InvalidDocumentList,
    TextError,
    parse_documents,
    parse_json,
    parse_yaml,
    stored_spec,
)


@dataclass
class Validation:
    documents: list[tuple[str, str]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    #: What the problems are about, as the server would title them.
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def _item(problem: Problem, index: int | None, **extra: Any) -> dict[str, Any]:
    """A problem as the admin API's ``errors`` show it (members that do not apply left out)."""
    members = {"kind": problem.kind or None, "name": problem.name or None, "index": index}
    present = {key: value for key, value in (members | extra).items() if value is not None}
    return {"field": problem.field, "reason": problem.reason} | present


def _items(
    problems: list[Problem], position: Mapping[tuple[str, str], int]
) -> list[dict[str, Any]]:
    return [_item(p, position.get((p.kind, p.name))) for p in problems]


def validate_text(raw: bytes, *, json_body: bool) -> Validation:
    result = Validation()
    try:
        documents = parse_documents([parse_json(raw)] if json_body else parse_yaml(raw))
    except TextError as error:
        problem = Problem("", "", "body", error.reason)
        result.errors = [_item(problem, None, line=error.line, column=error.column)]
        result.summary = f"the file is {error}"
        return result
    except InvalidDocumentList as invalid:
        result.errors = [_item(listed.problem, listed.index) for listed in invalid.problems]
        result.summary = f"{len(result.errors)} problem(s)"
        return result
    result.documents = [(d.kind, d.name) for d in documents]
    position: dict[tuple[str, str], int] = {
        (d.kind, d.name): index for index, d in enumerate(documents)
    }
    try:
        config = Config.from_documents(
            (d.kind, d.name, stored_spec(d), index + 1) for index, d in enumerate(documents)
        )
    except InvalidDocuments as error:
        result.errors = _items(error.problems, position)
        result.summary = f"{len(result.errors)} problem(s)"
        return result
    report = validate_config(config, Inventory(synced=False))
    result.errors = _items(report.errors, position)
    result.warnings = _items(report.warnings, position)
    if result.errors:
        result.summary = f"{len(result.errors)} problem(s) between the documents"
    return result
