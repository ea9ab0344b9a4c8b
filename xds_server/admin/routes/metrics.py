"""``GET /metrics``: the Prometheus text format of the app's own ``CollectorRegistry``.

The wiring registers the control plane's collectors on it; ``middleware/request_metrics.py``
the admin API's.
"""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses={
            200: {
                "description": "Every metric, prefixed xds_server_; see docs/operations.md.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        # Collected on the event loop: the collectors read state owned by it.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
