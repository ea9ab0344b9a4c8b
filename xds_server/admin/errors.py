"""Exception handlers: every error leaves as problem details, FastAPI's own included.

| status | type (``urn:xds-server:problem:…``) | when |
| --- | --- | --- |
| 400 | ``malformed-body``, ``invalid-page-token`` | JSON/YAML syntax (with the line), bad token |
| 404 | ``not-found`` | no such document, revision or path |
| 405 | ``method-not-allowed`` | (with ``Allow``) |
| 409 | ``still-referenced`` | deleting what a route uses |
| 412 | ``precondition-failed`` | ``If-Match`` / ``If-None-Match`` |
| 413 | ``content-too-large`` | body over the limit |
| 415 | ``unsupported-media-type`` | neither JSON nor YAML |
| 422 | ``invalid-document``, ``invalid-config``, ``invalid-request`` | see ``errors`` |
| 503 | ``store-unavailable`` | the store failed; the reason is logged, not sent |
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from xds_server.admin.problem import ApiError, error_response, item, problem_items, problem_response
from xds_server.admin.writes import ValidationFailed
from xds_server.model import InvalidDocuments, Problem
from xds_server.model.problems import field_path
from xds_server.store import (
    InvalidChange,
    NotFound,
    PreconditionFailed,
    RevisionNotFound,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger("xds_server.admin")

#: How long a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = "2"
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _slug(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-")
    except ValueError:
        return "error"


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error_response(error, request.url.path)


async def _http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    status = error.status_code
    if status < 400 or status in (204, 304):
        return Response(status_code=status, headers=error.headers)
    detail = error.detail if isinstance(error.detail, str) else HTTPStatus(status).phrase
    if status == 404:
        detail = f"there is nothing at {request.url.path}"
    headers = dict(error.headers or {})
    if status == 405:
        allowed = _allowed_methods(request) or headers.get("allow", headers.get("Allow", ""))
        headers = {k: v for k, v in headers.items() if k.lower() != "allow"} | {"Allow": allowed}
        detail = f"{request.method} is not allowed here; allowed: {allowed}"
    return problem_response(
        status, _slug(status), detail, instance=request.url.path, headers=headers
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path (Starlette's ``Allow`` names only the
    first route's), found by asking the router about each method."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def _request_field(location: tuple[int | str, ...]) -> str:
    """``("body", "spec", "port")`` -> ``spec.port``; ``("query", "limit")`` stays
    ``query.limit``; ``("header", "if-match")`` is ``header.if-match``."""
    if location and location[0] == "body":
        return field_path(location[1:]) or "body"
    return field_path(location)


async def _request_validation(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    errors = [
        item(_request_field(tuple(detail.get("loc", ()))), str(detail.get("msg", "invalid")))
        for detail in error.errors()
    ]
    fields = ", ".join(e["field"] for e in errors)
    return problem_response(
        422,
        "invalid-request",
        f"invalid request parameters: {fields}",
        errors,
        title="Invalid request",
        instance=request.url.path,
    )


def _invalid(request: Request, what: str, detail: str, problems: list[Problem]) -> Response:
    """A 422 naming every problem (``what``: ``config`` or ``document``)."""
    return problem_response(
        422,
        f"invalid-{what}",
        detail,
        problem_items(problems),
        title=f"Invalid {what}",
        instance=request.url.path,
    )


async def _validation_failed(request: Request, error: Exception) -> Response:
    assert isinstance(error, ValidationFailed)
    detail = f"the resulting config would be invalid: {error}"
    return _invalid(request, "config", detail, error.problems)


async def _invalid_documents(request: Request, error: Exception) -> Response:
    assert isinstance(error, InvalidDocuments)
    return _invalid(request, "document", str(error), error.problems)


async def _precondition_failed(request: Request, error: Exception) -> Response:
    assert isinstance(error, PreconditionFailed)
    header = "If-None-Match" if error.expected is None else "If-Match"
    reason = str(error).removeprefix("precondition failed: ")
    return problem_response(
        412,
        "precondition-failed",
        str(error),
        [item(f"header.{header.lower()}", reason, kind=error.kind, name=error.name)],
        instance=request.url.path,
        headers={"ETag": error.actual} if error.actual else None,
    )


async def _not_found(request: Request, error: Exception) -> Response:
    assert isinstance(error, NotFound | RevisionNotFound)
    return problem_response(404, "not-found", str(error), instance=request.url.path)


async def _invalid_change(request: Request, error: Exception) -> Response:
    return problem_response(
        422,
        "invalid-document",
        str(error),
        [item("body", str(error))],
        title="Invalid document",
        instance=request.url.path,
    )


async def _store_unavailable(request: Request, error: Exception) -> Response:
    # The reason (a path, an OS error) is for the operator's log, not for API clients.
    log.warning("config store unavailable for %s %s: %s", request.method, request.url.path, error)
    return problem_response(
        503,
        "store-unavailable",
        "the config store is unavailable; nothing was changed. Try again later.",
        title="Config store unavailable",
        instance=request.url.path,
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _internal_error(request: Request, error: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return problem_response(
        500, "internal-error", "the request failed; the server log has the details"
    )


def install_error_handlers(app: FastAPI) -> None:
    handlers: dict[type[Exception], Any] = {
        ApiError: _api_error,
        HTTPException: _http_exception,
        RequestValidationError: _request_validation,
        ValidationFailed: _validation_failed,
        InvalidDocuments: _invalid_documents,
        PreconditionFailed: _precondition_failed,
        NotFound: _not_found,
        RevisionNotFound: _not_found,
        InvalidChange: _invalid_change,
        StoreUnavailable: _store_unavailable,
        StoreError: _store_unavailable,  # e.g. not open yet: transient, like unavailable
        Exception: _internal_error,
    }
    for exception, handler in handlers.items():
        app.add_exception_handler(exception, handler)
