"""``POST /v1/mesh/rotate-root``: the operator starts a rotation of the built-in mesh CA root.

``GET|PUT /v1/mesh`` (the ``Mesh`` document and its status) are the generic singleton routes
of ``resources``; this router adds the one action on the CA itself. The rotation is the mesh
CA's (``MeshAuthority.rotate_root``, injected as ``AdminContext.mesh_rotate_root``): the new
root joins every trust bundle first, leaves are re-issued from it, the old root leaves the
bundles last. The answer (202) is the mesh status at once, holding both roots; a rotation
already under way, a provided CA or no mesh at all is a 409. A POST needs a ``write`` token
when tokens are configured, like every other write.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse

from xds_server.admin.mesh_status import (
    MeshRootRotation,
    MeshStatus,
    MeshStatusSource,
    status_view,
)
from xds_server.admin.openapi import responses as docs
from xds_server.admin.problem import PROBLEM_JSON, ApiError

ROTATE_ROOT_PATH = "/v1/mesh/rotate-root"

_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "No rotation started: one is already under way, the CA is provided, "
        "or there is no Mesh (the problem's type says which).",
        "content": {PROBLEM_JSON: {"schema": docs.ref("ProblemDetails")}},
    }
}


def mesh_router(rotate: MeshRootRotation | None, status: MeshStatusSource | None) -> APIRouter:
    router = APIRouter(tags=["mesh"])

    @router.post(
        ROTATE_ROOT_PATH,
        operation_id="rotateMeshRoot",
        summary="Rotate the built-in mesh CA root (the new root is trusted first, leaves are "
        "re-issued from it, the old root leaves the trust bundles last)",
        status_code=202,
        response_class=JSONResponse,
        responses={
            202: docs.response(
                "Started: the mesh status, whose trust bundle holds both roots.",
                docs.ref(MeshStatus.__name__),
            ),
            **_CONFLICT,
            **docs.problems(),
        },
    )
    async def rotate_root() -> JSONResponse:
        if rotate is None:
            raise ApiError(409, "no-mesh-ca", "this server runs no mesh CA")
        refused = await rotate()
        if refused is not None:
            raise ApiError(409, refused.code, refused.reason)
        return JSONResponse(status_view(status) or {}, status_code=202)

    return router
