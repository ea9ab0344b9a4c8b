"""History and rollback: ``GET /v1/history``, ``GET /v1/history/{revision}``,
``GET /v1/revision`` and ``POST /v1/rollback``.

A rollback makes a new revision whose documents are exactly those of an old one. The restored
config is validated like any write (against today's inventory and model), so a rollback that
would be refused as a write is refused too (422).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xds_server.admin.body import read_values
from xds_server.admin.documents import invalid
from xds_server.admin.kinds import kind_named
from xds_server.admin.openapi import responses as docs
from xds_server.admin.openapi.schemas import RollbackRequest
from xds_server.admin.problem import ApiError, item, problem_items
from xds_server.admin.routes.params import DryRun
from xds_server.admin.services import AdminServices
from xds_server.admin.views import history_view, write_view
from xds_server.admin.writes import ValidationFailed
from xds_server.model.problems import field_path
from xds_server.store import ConfigStore, RevisionNotFound

MAX_LIMIT = 1000
#: Revisions are SQLite integers; larger numbers cannot exist (and would not bind).
MAX_REVISION = 2**62


def history_router(services: AdminServices) -> APIRouter:
    router = APIRouter(tags=["history"])
    store = services.context.store
    _add_list_history(router, store)
    _add_get_revision(router, store)
    _add_current_revision(router, store)
    _add_rollback(router, services)
    return router


async def _history_page(
    store: ConfigStore,
    kind: str | None,
    name: str | None,
    limit: int,
    before_revision: int | None,
) -> dict[str, Any]:
    """A page of history, and where the next (older) one starts (``None`` on the last)."""
    resource = kind_named(kind) if kind is not None else None
    kind_filter = resource.kind.value if resource is not None else kind
    page = await store.history(kind_filter, name, limit=limit, before_revision=before_revision)
    next_before: int | None = None
    if page and page[-1].revision > 1:
        older = await store.history(kind_filter, name, limit=1, before_revision=page[-1].revision)
        next_before = page[-1].revision if older else None
    return {"items": [history_view(e) for e in page], "next_before_revision": next_before}


def _add_list_history(router: APIRouter, store: ConfigStore) -> None:
    @router.get(
        "/v1/history",
        operation_id="list_history",
        summary="Config history, newest first",
        responses={
            200: docs.response("A page of history entries.", docs.ref("HistoryPage")),
            **docs.problems(422),
        },
    )
    async def list_history(
        kind: Annotated[
            str | None, Query(description="Only this kind (Route, or its URL name routes).")
        ] = None,
        name: Annotated[str | None, Query(description="Only documents of this name.")] = None,
        limit: Annotated[
            int,
            Query(
                ge=1,
                le=MAX_LIMIT,
                description="Page size; a revision is never split, so a page with one large "
                "revision may hold more.",
            ),
        ] = 100,
        before_revision: Annotated[
            int | None,
            Query(
                ge=1,
                le=MAX_REVISION,
                description="Only revisions older than this (next_before_revision).",
            ),
        ] = None,
    ) -> Response:
        return JSONResponse(await _history_page(store, kind, name, limit, before_revision))


def _add_get_revision(router: APIRouter, store: ConfigStore) -> None:
    @router.get(
        "/v1/history/{revision}",
        operation_id="get_revision",
        summary="Every change of one revision",
        responses={
            200: docs.response("The revision's changes.", docs.ref("RevisionView")),
            **docs.problems(404, 422),
        },
    )
    async def get_revision(revision: Annotated[int, Path(ge=1, le=MAX_REVISION)]) -> Response:
        entries = await store.history(
            since_revision=revision - 1, before_revision=revision + 1, limit=1
        )
        if not entries:
            raise ApiError(404, "not-found", f"there is no revision {revision}")
        first = entries[0]
        return JSONResponse(
            {
                "revision": revision,
                "time": first.time,
                "actor": first.actor,
                "note": first.note,
                "changes": [history_view(e) for e in entries],
            }
        )


def _add_current_revision(router: APIRouter, store: ConfigStore) -> None:
    @router.get(
        "/v1/revision",
        operation_id="get_current_revision",
        summary="The current config revision",
        responses={
            200: docs.response("The current revision.", docs.ref("CurrentRevision")),
            **docs.problems(),
        },
    )
    async def current_revision() -> Response:
        return JSONResponse({"revision": store.current().revision})


def _request_of(values: list[Any]) -> RollbackRequest:
    if len(values) != 1:
        raise invalid("expected one object {revision}", [item("body", "expected one object")])
    try:
        return RollbackRequest.model_validate(values[0])
    except ValidationError as error:
        errors = [
            item(field_path(detail["loc"]) or "body", detail["msg"])
            for detail in error.errors(include_url=False)
        ]
        raise invalid("the rollback request is invalid", errors) from None


def _add_rollback(router: APIRouter, services: AdminServices) -> None:
    @router.post(
        "/v1/rollback",
        operation_id="rollback",
        summary="Restore the documents of an earlier revision (as a new revision)",
        responses={
            200: docs.response(
                "Rolled back (or, for a dry run, what would change); no new revision when the "
                "config already equals the chosen one.",
                docs.ref("WriteResult"),
            ),
            **docs.problems(400, 413, 415, 422),
        },
        openapi_extra=docs.request_body(docs.ref("RollbackRequest"), "The revision to restore."),
    )
    async def rollback(
        request: Request,
        dry_run: DryRun = False,
    ) -> Response:
        wanted = _request_of(await read_values(request))
        try:
            outcome = await services.writer.rollback(
                wanted.revision, services.actor(request), note=wanted.note, dry_run=dry_run
            )
        except RevisionNotFound as error:
            raise invalid(str(error), [item("revision", str(error))]) from None
        except ValidationFailed as failed:
            raise invalid(
                f"the config of revision {wanted.revision} is not valid today; nothing was written",
                problem_items(failed.problems),
            ) from None
        return JSONResponse(write_view(outcome))
