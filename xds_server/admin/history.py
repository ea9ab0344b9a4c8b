"""``GET /v1/history``, ``GET /v1/history/{revision}`` and ``GET /v1/revision``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.responses import JSONResponse, Response

from xds_server.admin import responses as docs
from xds_server.admin.kinds import kind_named
from xds_server.admin.problem import ApiError
from xds_server.admin.services import AdminServices
from xds_server.admin.views import history_view

MAX_LIMIT = 1000
#: Revisions are SQLite integers; larger numbers cannot exist (and would not bind).
MAX_REVISION = 2**62


def history_router(services: AdminServices) -> APIRouter:
    router = APIRouter(tags=["history"])
    store = services.context.store

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
        resource = kind_named(kind) if kind is not None else None
        kind_filter = resource.kind.value if resource is not None else kind
        page = await store.history(kind_filter, name, limit=limit, before_revision=before_revision)
        next_before: int | None = None
        if page and page[-1].revision > 1:
            older = await store.history(
                kind_filter, name, limit=1, before_revision=page[-1].revision
            )
            next_before = page[-1].revision if older else None
        return JSONResponse(
            {"items": [history_view(e) for e in page], "next_before_revision": next_before}
        )

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

    return router
