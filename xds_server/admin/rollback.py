"""``POST /v1/rollback``: a new revision whose documents are exactly those of an old one.

The restored config is validated like any write (against today's inventory and model), so a
rollback that would be refused as a write is refused too (422).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xds_server.admin import responses as docs
from xds_server.admin.body import read_values
from xds_server.admin.documents import invalid
from xds_server.admin.problem import item, problem_items
from xds_server.admin.schemas import RollbackRequest
from xds_server.admin.services import AdminServices
from xds_server.admin.views import write_view
from xds_server.admin.writes import ValidationFailed
from xds_server.model.problems import field_path
from xds_server.store import RevisionNotFound


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


def rollback_router(services: AdminServices) -> APIRouter:
    router = APIRouter(tags=["history"])

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
        dry_run: Annotated[
            bool, Query(description="Validate and answer with what would change; save nothing.")
        ] = False,
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

    return router
