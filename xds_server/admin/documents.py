"""Documents in request bodies: decoded values in, validated model documents out.

A document is stored in normal form: the spec as the model dumps it, with only the fields
that were given (so a default changed in a later version applies to documents that did not
set it), durations canonical (``"1m30s"`` is kept as ``"90s"``). Applying the same document
twice is therefore recognised as "unchanged" however it was written.
"""

from __future__ import annotations

from typing import Any

from xds_server.admin.kinds import ResourceKind, resource_kinds
from xds_server.admin.problem import ApiError, item, problem_items
from xds_server.admin.schemas import READ_ONLY_FIELDS
from xds_server.model import AnyDocument, InvalidDocuments, parse_document
from xds_server.store import Change


def _kind_reason() -> str:
    return "kind must be one of " + ", ".join(k.kind.value for k in resource_kinds())


def invalid(detail: str, errors: list[dict[str, Any]]) -> ApiError:
    return ApiError(422, "invalid-document", detail, errors, title="Invalid document")


def stored_spec(document: AnyDocument) -> dict[str, Any]:
    return document.spec.model_dump(mode="json", exclude_unset=True)


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


def _writable(raw: dict[Any, Any]) -> dict[Any, Any]:
    """``raw`` without the read-only fields a ``GET`` added (so a read can be sent back)."""
    return {key: value for key, value in raw.items() if key not in READ_ONLY_FIELDS}


def document_for_put(kind: ResourceKind, name: str, values: list[Any]) -> AnyDocument:
    """The one document of a ``PUT /v1/{kind.path}/{name}`` body.

    ``kind`` and ``name`` may be left out (the URL says them); when given, they must match.
    """
    if len(values) != 1:
        raise invalid(
            f"expected one document, got {len(values)}",
            [item("body", f"expected one document, got {len(values)}")],
        )
    raw = values[0]
    if not isinstance(raw, dict):
        reason = "expected an object {kind, name, spec}"
        raise invalid(f"the body is not a document: {reason}", [item("body", reason)])
    body = _writable(raw)
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
        reason = f"{body['name']!r} does not match the name in the URL ({name!r})"
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
    raws: list[Any] = []
    for value in values:
        raws.extend(value if isinstance(value, list) else [value])
    parsed: list[AnyDocument] = []
    errors: list[dict[str, Any]] = []
    first_at: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(raws):
        if not isinstance(raw, dict):
            errors.append(item("body", "expected an object {kind, name, spec}", index=index))
            continue
        if not isinstance(raw.get("kind", ""), str):
            # Checked here: the model's kind discriminator cannot take a list or an object.
            errors.append(item("kind", f"{_kind_reason()}, not {raw['kind']!r}", index=index))
            continue
        try:
            document = parse_document(_writable(raw))
        except InvalidDocuments as error:
            errors.extend(
                item(p.field, p.reason, kind=p.kind or None, name=p.name or None, index=index)
                for p in error.problems
            )
            continue
        key = (document.kind, document.name)
        if key in first_at:
            reason = f"{document.kind} {document.name!r} is listed twice (first at {first_at[key]})"
            errors.append(item("name", reason, kind=key[0], name=key[1], index=index))
            continue
        first_at[key] = index
        parsed.append(document)
    if errors:
        raise invalid(f"the apply has {len(errors)} problem(s); nothing was written", errors)
    return parsed
