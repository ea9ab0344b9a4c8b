"""Problem details (RFC 9457): the body of every error the admin API answers.

``type`` is a URN per kind of problem (stable, for scripts to branch on), ``title`` its
summary, ``detail`` this occurrence, ``errors`` what exactly is wrong, one entry per field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from xds_server.model import Problem
from xds_server.model.text import ListedProblem

PROBLEM_JSON: Final = "application/problem+json"
TYPE_PREFIX: Final = "urn:xds-server:problem:"


class ErrorItem(BaseModel):
    """One thing wrong (or, in ``warnings``, worth knowing), located by field."""

    field: str = Field(
        description="Where: a path into the document (``spec.rules[0].matches[0].path.regex``),"
        " ``query.NAME`` / ``header.NAME`` for request parameters, ``body`` for the whole body."
    )
    reason: str
    kind: str | None = Field(default=None, description="The document's kind, when not obvious.")
    name: str | None = Field(default=None, description="The document's name, when not obvious.")
    index: int | None = Field(default=None, description="The document's position in an apply.")
    line: int | None = Field(default=None, description="Of a JSON or YAML syntax error, from 1.")
    column: int | None = Field(default=None, description="Of a JSON or YAML syntax error, from 1.")


class ProblemDetails(BaseModel):
    type: str = Field(description="A URN naming the kind of problem.")
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request path.")
    errors: list[ErrorItem] = Field(default_factory=list)


def item(field: str, reason: str, **extra: Any) -> dict[str, Any]:
    """An ``ErrorItem`` as JSON, without the members that do not apply."""
    return {"field": field, "reason": reason} | {k: v for k, v in extra.items() if v is not None}


def problem_items(
    problems: Iterable[Problem], *, located: bool = True, index: Mapping[Any, int] | None = None
) -> list[dict[str, Any]]:
    """Model problems as ``ErrorItem``\\ s; ``located`` adds their kind and name, ``index`` maps
    ``(kind, name)`` to the document's position in an apply."""
    return [
        item(
            p.field,
            p.reason,
            kind=p.kind if located else None,
            name=p.name if located else None,
            index=index.get((p.kind, p.name)) if index is not None else None,
        )
        for p in problems
    ]


def listed_items(problems: Iterable[ListedProblem]) -> list[dict[str, Any]]:
    """Problems of the documents of a list, each with the document's ``index``."""
    return [
        item(
            listed.problem.field,
            listed.problem.reason,
            kind=listed.problem.kind or None,
            name=listed.problem.name or None,
            index=listed.index,
        )
        for listed in problems
    ]


class ApiError(Exception):
    """Raised anywhere in a request; rendered as problem details by the exception handler."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        errors: Iterable[Mapping[str, Any]] = (),
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = [dict(e) for e in errors]
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})


def problem_response(
    status: int,
    slug: str,
    detail: str,
    errors: Iterable[Mapping[str, Any]] = (),
    *,
    title: str | None = None,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "errors": [dict(e) for e in errors],
    }
    if instance is not None:
        body["instance"] = instance
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def error_response(error: ApiError, instance: str | None) -> JSONResponse:
    return problem_response(
        error.status,
        error.slug,
        error.detail,
        error.errors,
        title=error.title,
        instance=instance,
        headers=error.headers,
    )
