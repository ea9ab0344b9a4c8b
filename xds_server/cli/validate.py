"""``xds-server validate -f FILE``: check documents offline, as the server would.

Parses the file (a YAML stream or JSON), validates each document against the model, then the
documents together (references between them, overlapping listeners) — the checks a write
through the REST API makes, minus those that need the server: the documents already stored
and the registry's services. No server is contacted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xds_server.admin.body import parse_json, parse_yaml
from xds_server.admin.documents import documents_for_apply, stored_spec
from xds_server.admin.problem import ApiError, problem_items
from xds_server.model import Config, InvalidDocuments, Inventory, validate_config


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


def validate_text(raw: bytes, *, json_body: bool) -> Validation:
    result = Validation()
    try:
        values = [parse_json(raw)] if json_body else parse_yaml(raw)
        documents = documents_for_apply(values)
    except ApiError as error:
        result.errors = error.errors
        result.summary = (
            error.detail.replace("the body", "the file", 1)
            if error.status == 400
            else f"{len(error.errors)} problem(s)"
        )
        return result
    result.documents = [(d.kind, d.name) for d in documents]
    position = {(d.kind, d.name): index for index, d in enumerate(documents)}
    try:
        config = Config.from_documents(
            (d.kind, d.name, stored_spec(d), index + 1) for index, d in enumerate(documents)
        )
    except InvalidDocuments as error:
        result.errors = problem_items(error.problems, index=position)
        result.summary = f"{len(result.errors)} problem(s)"
        return result
    report = validate_config(config, Inventory(synced=False))
    result.errors = problem_items(report.errors, index=position)
    result.warnings = problem_items(report.warnings, index=position)
    if result.errors:
        result.summary = f"{len(result.errors)} problem(s) between the documents"
    return result
