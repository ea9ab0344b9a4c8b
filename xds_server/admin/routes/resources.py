"""``/v1/{kind}``: list, read, create-or-replace and delete documents of one kind.

One factory for every kind; what differs between kinds lives in ``model.KINDS`` and
``admin.kinds.ResourceKind``.

- ``GET /v1/{kind}``: ``{items, next_page_token}``, by name; ``limit`` (1-1000, default
  100), ``page_token``, and the kind's filters (``?listener=``, ``?service=`` for routes).
- ``GET /v1/{kind}/{name}``: the document with ``revision``, ``updated_at``, ``warnings``
  and an ``ETag``; ``If-None-Match`` gives 304.
- ``PUT /v1/{kind}/{name}``: 201 created / 200 replaced (or unchanged), the stored document.
  ``If-Match`` (replace only that version), ``If-None-Match: *`` (create only).
- ``DELETE /v1/{kind}/{name}``: 204; 409 naming the referrers while others use it.
- ``?dry_run=true`` on writes: 200 with what would change, nothing saved.

A singleton kind (``Mesh``: one document) is served at ``/v1/{kind}`` itself, with the same
``GET``/``PUT``/``DELETE`` and no list: the handlers are the same, only where the name comes
from differs (the URL, or the kind's one name).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xds_server.admin.body import read_values
from xds_server.admin.checker import CheckedState
from xds_server.admin.documents import document_for_put
from xds_server.admin.kinds import ListFilter, ResourceKind
from xds_server.admin.mesh_status import status_view
from xds_server.admin.openapi import responses as docs
from xds_server.admin.openapi.schemas import body_model, list_model, stored_model
from xds_server.admin.paging import decode_token, encode_token
from xds_server.admin.preconditions import if_match, if_none_match, not_modified
from xds_server.admin.problem import ApiError, problem_items
from xds_server.admin.routes.params import DryRun
from xds_server.admin.services import AdminServices
from xds_server.admin.views import document_view, write_view
from xds_server.admin.writes import ValidationFailed, WriteOutcome
from xds_server.model.names import NAME_PATTERN
from xds_server.store import Change, Document

MAX_LIMIT = 1000

Name = Annotated[
    str,
    Path(description="The document's name.", json_schema_extra={"pattern": NAME_PATTERN}),
]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='Write only if the document\'s ETag is one of these ("*": it exists).',
    ),
]


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def _stored(kind: ResourceKind) -> dict[str, str]:
    return docs.ref(stored_model(kind).__name__)


def not_found(kind: ResourceKind, name: str) -> ApiError:
    return ApiError(404, "not-found", kind.describe_missing(name))


def _name_in_url(name: Name) -> str:
    return name


@dataclass(frozen=True, slots=True)
class _Item:
    """Where one document's routes are (below the kind's prefix) and where its name comes
    from: a dependency, so the handlers are the same for both."""

    path: str
    name: Callable[..., str]

    @staticmethod
    def of(kind: ResourceKind) -> _Item:
        fixed = kind.singleton
        if fixed is None:
            return _Item("/{name}", _name_in_url)

        def the_one_name() -> str:
            return fixed

        return _Item("", the_one_name)


def resource_router(kind: ResourceKind, services: AdminServices) -> APIRouter:
    router = APIRouter(prefix=f"/v1/{kind.path}", tags=[kind.path])
    item = _Item.of(kind)
    if kind.singleton is None:
        _add_list(router, kind, services)
    _add_get(router, kind, services, item)
    _add_put(router, kind, services, item)
    _add_delete(router, kind, services, item)
    return router


def _page(
    kind: ResourceKind,
    checked: CheckedState,
    after: str | None,
    limit: int,
    wanted: list[tuple[ListFilter, str]],
) -> dict[str, Any]:
    """One page of a list: the documents after ``after`` that every filter keeps."""
    selected: list[Document] = []
    for doc in sorted(checked.state.of_kind(kind.kind.value), key=lambda d: d.name):
        if after is not None and doc.name <= after:
            continue
        if wanted:
            spec = checked.spec_of(doc.kind, doc.name)
            if spec is None or not all(f.matches(spec, value) for f, value in wanted):
                continue
        selected.append(doc)
        if len(selected) > limit:
            break
    page = selected[:limit]
    return {
        "items": [document_view(kind, doc, checked) for doc in page],
        "next_page_token": encode_token(page[-1].name) if len(selected) > limit else None,
    }


def _add_list(router: APIRouter, kind: ResourceKind, services: AdminServices) -> None:
    @router.get(
        "",
        operation_id=f"list_{kind.info.config_field}",
        summary=f"List {kind.path}",
        responses={
            200: docs.response(f"A page of {kind.path}.", docs.ref(list_model(kind).__name__)),
            **docs.problems(400, 422),
        },
        openapi_extra={
            "parameters": [docs.query_parameter(f.param, f.description) for f in kind.filters]
        },
    )
    async def list_documents(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = 100,
        page_token: Annotated[
            str | None, Query(description="next_page_token of the previous page.")
        ] = None,
    ) -> Response:
        after = decode_token(page_token) if page_token is not None else None
        query = request.query_params
        wanted = [(f, query[f.param]) for f in kind.filters if f.param in query]
        return JSONResponse(_page(kind, services.checked(), after, limit, wanted))


def _add_get(router: APIRouter, kind: ResourceKind, services: AdminServices, item: _Item) -> None:
    status_source = kind.status_source(services.context) if kind.status_source else None

    @router.get(
        item.path,
        operation_id=f"get_{_snake(kind.kind.value)}",
        summary=f"Read a {kind.kind.value}",
        responses={
            200: docs.response(f"The {kind.kind.value}.", _stored(kind), docs.ETAG_HEADER),
            304: {"description": "Not modified (If-None-Match)."},
            **docs.problems(404),
        },
    )
    async def get_document(
        if_none_match: Annotated[
            str | None, Header(description="Answer 304 if the ETag is still one of these.")
        ] = None,
        name: str = Depends(item.name),
    ) -> Response:
        checked = services.checked()
        doc = checked.state.get(kind.kind.value, name)
        if doc is None:
            raise not_found(kind, name)
        headers = {"ETag": doc.etag}
        if not_modified(if_none_match, doc):
            return Response(status_code=304, headers=headers)
        view = document_view(kind, doc, checked)
        if kind.status_model is not None:
            view["status"] = status_view(status_source)
        return JSONResponse(view, headers=headers)


def _add_put(router: APIRouter, kind: ResourceKind, services: AdminServices, item: _Item) -> None:
    stored = _stored(kind)
    said_by_url = (
        f"the name is always {kind.singleton!r}" if kind.singleton else "the URL says them"
    )

    @router.put(
        item.path,
        operation_id=f"put_{_snake(kind.kind.value)}",
        summary=f"Create or replace a {kind.kind.value}",
        responses={
            200: {
                "description": f"Replaced (or unchanged): the stored {kind.kind.value}; for a "
                "dry run, what would change.",
                "content": docs.json_content({"anyOf": [stored, docs.ref("WriteResult")]}),
                "headers": docs.ETAG_HEADER,
            },
            201: docs.response(f"Created: the stored {kind.kind.value}.", stored, docs.ETAG_HEADER),
            **docs.problems(400, 412, 413, 415, 422),
        },
        openapi_extra=docs.request_body(
            docs.ref(body_model(kind).__name__),
            f"The {kind.kind.value}; kind and name may be left out ({said_by_url}). "
            "revision, updated_at and warnings, if sent back, are ignored.",
        ),
    )
    async def put_document(
        request: Request,
        dry_run: DryRun = False,
        if_match_header: IfMatch = None,
        if_none_match_header: Annotated[
            str | None,
            Header(alias="If-None-Match", description='"*": create only, never replace.'),
        ] = None,
        name: str = Depends(item.name),
    ) -> Response:
        document = document_for_put(kind, name, await read_values(request))
        current = services.context.store.current().get(kind.kind.value, name)
        change = services.change_of(
            document,
            if_match=if_match(if_match_header, current),
            if_none_match=if_none_match(if_none_match_header, current),
        )
        outcome = await services.writer.commit([change], services.actor(request), dry_run=dry_run)
        if dry_run:
            return JSONResponse(write_view(outcome))
        return _stored_answer(kind, name, outcome)


def _stored_answer(kind: ResourceKind, name: str, outcome: WriteOutcome) -> Response:
    """The answer to a ``PUT`` that was committed: the stored document, 201 if created."""
    doc = outcome.result.state.get(kind.kind.value, name)
    if doc is None:  # another process deleted it at once; tell the truth
        raise not_found(kind, name)
    headers = {"ETag": doc.etag}
    created = outcome.outcome_of(kind.kind.value, name) == "created"
    if created:
        headers["Location"] = kind.url(name)
    return JSONResponse(
        document_view(kind, doc, outcome.after),
        status_code=201 if created else 200,
        headers=headers,
    )


def _add_delete(
    router: APIRouter, kind: ResourceKind, services: AdminServices, item: _Item
) -> None:
    @router.delete(
        item.path,
        operation_id=f"delete_{_snake(kind.kind.value)}",
        summary=f"Delete a {kind.kind.value}",
        status_code=204,
        response_class=Response,
        responses={
            204: {"description": "Deleted."},
            200: docs.response("Dry run: what would change.", docs.ref("WriteResult")),
            **docs.problems(404, 409, 412),
        },
    )
    async def delete_document(
        request: Request,
        dry_run: DryRun = False,
        if_match_header: IfMatch = None,
        name: str = Depends(item.name),
    ) -> Response:
        current = services.context.store.current().get(kind.kind.value, name)
        change = Change(kind.kind.value, name, None, if_match=if_match(if_match_header, current))
        try:
            outcome = await services.writer.commit(
                [change], services.actor(request), dry_run=dry_run
            )
        except ValidationFailed as failed:
            raise still_referenced(kind, name, failed) from None
        if dry_run:
            return JSONResponse(write_view(outcome))
        return Response(status_code=204)


def still_referenced(kind: ResourceKind, name: str, failed: ValidationFailed) -> ApiError:
    referrers = ", ".join(sorted({f"{p.kind} {p.name!r}" for p in failed.problems}))
    return ApiError(
        409,
        "still-referenced",
        f"{kind.kind.value} {name!r} is still used by {referrers}",
        problem_items(failed.problems),
        title="Still referenced",
    )
