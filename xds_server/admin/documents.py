"""Documents in request bodies: decoded values in, validated model documents out.

A document is stored in normal form: the spec as the model dumps it, with only the fields
that were given (so a default changed in a later version applies to documents that did not
set it), durations canonical (``"1m30s"`` is kept as ``"90s"``). Applying the same document
twice is therefore recognised as "unchanged" however it was written.
"""

from __future__ import annotations

from typing import Any

from xds_server.admin.kinds import ResourceKind
from xds_server.admin.problem import ApiError, item, listed_items, problem_items
from xds_server.model import AnyDocument, InvalidDocuments, parse_document
from xds_server.model.text import (
    NOT_A_DOCUMENT,
    InvalidDocumentList,
    parse_documents,
    stored_spec,
    writable,
)
from xds_server.store import Change


def invalid(detail: str, errors: list[dict[str, Any]]) -> ApiError:
    return ApiError(422, "invalid-document", detail, errors, title="Invalid document")


def change_of(
    document: AnyDocument, *, if_match: str | None = None, if_none_match: bool = False
) -> Change:
    return Change(
        document.kind,
        document.name,
        stored_spec(document),
        if_match=if_match,
        if_none_match=if_none_match,
    )


def document_for_put(kind: ResourceKind, name: str, values: list[Any]) -> AnyDocument:
    """The one document of a ``PUT /v1/{kind.path}/{name}`` body (``PUT /v1/{kind.path}``
    for a singleton kind, whose ``name`` is its one name).

    ``kind`` and ``name`` may be left out (the URL says them); when given, they must match.
    """
    if len(values) != 1:
        raise invalid(
            f"expected one document, got {len(values)}",
            [item("body", f"expected one document, got {len(values)}")],
        )
    raw = values[0]
    if not isinstance(raw, dict):
        raise invalid(
            f"the body is not a document: {NOT_A_DOCUMENT}", [item("body", NOT_A_DOCUMENT)]
        )
    body = writable(raw)
    expected = kind.kind.value
    if body.get("kind") is None:
        body["kind"] = expected
    if body.get("name") is None:
        body["name"] = name
    if body["kind"] != expected:
        reason = (
            f"{body['kind']!r} does not match the URL: /v1/{kind.path} holds {expected} documents"
        )
        raise invalid(f"kind: {reason}", [item("kind", reason)])
    if body["name"] != name:
        reason = (
            f"{body['name']!r}: the {expected} document is always named {name!r}"
            if kind.singleton is not None
            else f"{body['name']!r} does not match the name in the URL ({name!r})"
        )
        raise invalid(f"name: {reason}", [item("name", reason)])
    try:
        return parse_document(body)
    except InvalidDocuments as error:
        raise invalid(
            f"{expected} {name!r} is invalid: {len(error.problems)} problem(s)",
            problem_items(error.problems, located=False),
        ) from None


def documents_for_apply(values: list[Any]) -> list[AnyDocument]:
    """Every document of an apply body: a JSON array (or one object), or a YAML stream whose
    documents are documents or lists of them. Every problem of every document is reported."""
    try:
        return parse_documents(values)
    except InvalidDocumentList as error:
        errors = listed_items(error.problems)
        raise invalid(
            f"the apply has {len(errors)} problem(s); nothing was written", errors
        ) from None
