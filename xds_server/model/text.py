"""Operator documents from text: JSON, or a YAML stream (what operators keep config in), and
the documents of a list, every problem of every one reported with its position.

Shared by the admin API (request bodies) and ``xds-server validate`` (files), so a file is
judged offline exactly as the server would judge it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import yaml

from xds_server.model.document import KIND_REASON, AnyDocument, parse_document
from xds_server.model.problems import InvalidDocuments, Problem

#: Extra nodes a YAML text may have beyond one per byte; aliases repeat nodes without bytes,
#: so a "billion laughs" text is stopped here instead of being expanded by validation.
_YAML_NODE_ALLOWANCE: Final = 1_000

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TextError(ValueError):
    """The text is not valid JSON or YAML; ``line`` and ``column`` count from 1."""

    def __init__(self, language: str, reason: str, line: int | None, column: int | None) -> None:
        self.language = language
        self.reason = reason
        self.line = line
        self.column = column
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"not valid {language}{where}: {reason}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise TextError("JSON", error.msg, error.lineno, error.colno) from None
    except UnicodeDecodeError as error:
        raise TextError("JSON", f"not UTF-8: {error.reason}", None, None) from None
    except ValueError as error:  # NaN, Infinity; and numbers too long to convert
        raise TextError("JSON", str(error), None, None) from None
    except RecursionError:
        raise TextError("JSON", "nested too deeply", None, None) from None


def parse_yaml(raw: bytes) -> list[Any]:
    """The non-empty documents of a YAML stream."""
    try:
        documents = [doc for doc in yaml.load_all(raw, Loader=_Loader) if doc is not None]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        reason = error.problem or error.context or "invalid YAML"
        if error.context and error.problem:
            reason = f"{error.problem} ({error.context})"
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise TextError("YAML", reason, line, column) from None
    except yaml.YAMLError as error:  # e.g. a byte that cannot be decoded
        raise TextError("YAML", str(error), None, None) from None
    except RecursionError:
        raise TextError("YAML", "nested too deeply", None, None) from None
    if _too_many_nodes(documents, len(raw) + _YAML_NODE_ALLOWANCE):
        raise TextError("YAML", "aliases expand to a document too large to accept", None, None)
    return documents


def _too_many_nodes(value: Any, budget: int) -> bool:
    stack = [value]
    while stack:
        budget -= 1
        if budget < 0:
            return True
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set):
            stack.extend(node)
    return False


#: Why a value is not taken as a document.
NOT_A_DOCUMENT: Final = "expected an object {kind, name, spec}"
#: Fields a ``GET`` adds to a document; ignored when sent back in a ``PUT`` or ``apply``.
READ_ONLY_FIELDS: Final = ("revision", "updated_at", "warnings", "info")


def writable(raw: dict[Any, Any]) -> dict[Any, Any]:
    """``raw`` without the read-only fields a ``GET`` added (so a read can be sent back)."""
    return {key: value for key, value in raw.items() if key not in READ_ONLY_FIELDS}


@dataclass(frozen=True, slots=True)
class ListedProblem:
    """A problem of the document at ``index`` of a list (``kind``/``name`` empty when the
    document does not say them)."""

    index: int
    problem: Problem


class InvalidDocumentList(ValueError):
    def __init__(self, problems: list[ListedProblem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s)")


def parse_documents(values: list[Any]) -> list[AnyDocument]:
    """Every document of decoded values: documents, or lists of them. Raise
    ``InvalidDocumentList`` with every problem of every document."""
    raws: list[Any] = []
    for value in values:
        raws.extend(value if isinstance(value, list) else [value])
    parsed: list[AnyDocument] = []
    problems: list[ListedProblem] = []
    first_at: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(raws):
        if not isinstance(raw, dict):
            problems.append(
                ListedProblem(
                    index, Problem("", "", "body", "expected an object {kind, name, spec}")
                )
            )
            continue
        if not isinstance(raw.get("kind", ""), str):
            # Checked here: the model's kind discriminator cannot take a list or an object.
            reason = f"{KIND_REASON}, not {raw['kind']!r}"
            problems.append(ListedProblem(index, Problem("", "", "kind", reason)))
            continue
        try:
            document = parse_document(writable(raw))
        except InvalidDocuments as error:
            problems.extend(ListedProblem(index, p) for p in error.problems)
            continue
        key = (document.kind, document.name)
        if key in first_at:
            reason = f"{document.kind} {document.name!r} is listed twice (first at {first_at[key]})"
            problems.append(ListedProblem(index, Problem(*key, "name", reason)))
            continue
        first_at[key] = index
        parsed.append(document)
    if problems:
        raise InvalidDocumentList(problems)
    return parsed


def stored_spec(document: AnyDocument) -> dict[str, Any]:
    """The spec in normal form: as the model dumps it, with only the fields that were given
    (so a default changed in a later version applies to documents that did not set it)."""
    return document.spec.model_dump(mode="json", exclude_unset=True)
