"""``POST /v1/apply``: many documents, validated together, committed as one revision.

The body is a JSON array of documents or a YAML stream (``Content-Type: application/yaml``,
documents separated by ``---``). Every document is created or replaced; the config they
result in is validated as a whole, and one problem anywhere means nothing is written and
the revision stays. Apply never deletes: documents not listed are left as they are (use
``DELETE``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from xds_server.admin.body import read_values
from xds_server.admin.documents import documents_for_apply, invalid
from xds_server.admin.openapi import responses as docs
from xds_server.admin.problem import problem_items
from xds_server.admin.routes.params import DryRun
from xds_server.admin.services import AdminServices
from xds_server.admin.views import write_view
from xds_server.admin.writes import ValidationFailed, WriteOutcome
from xds_server.model import AnyDocument


def apply_router(services: AdminServices) -> APIRouter:
    router = APIRouter(tags=["apply"])

    @router.post(
        "/v1/apply",
        operation_id="apply",
        summary="Create or replace many documents in one revision",
        responses={
            200: docs.response(
                "Applied (or, for a dry run, what would be): the new revision and every "
                "document's operation.",
                docs.ref("WriteResult"),
            ),
            **docs.problems(400, 413, 415, 422),
        },
        openapi_extra=docs.request_body(
            docs.ref("DocumentList"),
            "Documents: a JSON array, or a YAML stream (application/yaml, '---' between "
            "documents).",
        ),
    )
    async def apply(
        request: Request,
        dry_run: DryRun = False,
    ) -> Response:
        documents = documents_for_apply(await read_values(request))
        position = {(d.kind, d.name): index for index, d in enumerate(documents)}
        try:
            outcome = await services.writer.commit(
                [services.change_of(d) for d in documents], services.actor(request), dry_run=dry_run
            )
        except ValidationFailed as failed:
            raise invalid(
                f"the resulting config would be invalid ({len(failed.problems)} problem(s)); "
                "nothing was written",
                problem_items(failed.problems, index=position),
            ) from None
        return JSONResponse(write_view(outcome, [_applied(d, outcome) for d in documents]))

    return router


def _applied(document: AnyDocument, outcome: WriteOutcome) -> dict[str, Any]:
    """The fate of one document of an apply."""
    stored = outcome.result.state.get(document.kind, document.name)
    warnings = outcome.after.warnings_of(document.kind, document.name)
    return {
        "kind": document.kind,
        "name": document.name,
        "operation": outcome.outcome_of(document.kind, document.name),
        "revision": stored.revision if stored is not None else outcome.result.revision,
        "warnings": problem_items(warnings, located=False),
    }
