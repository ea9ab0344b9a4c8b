"""``GET /metrics`` (Prometheus text format) and the admin API's own request metrics.

The app exposes one ``CollectorRegistry`` (its own, never the process-global one, so several
servers can run in one test process); the wiring registers the control plane's collectors on
it, this module the admin API's:

- ``xds_server_admin_requests_total{method, route, status}``: by route *template*
  (``/v1/routes/{name}``, never the raw path, so the label set stays bounded; requests that
  match no route are ``route="unmatched"``);
- ``xds_server_admin_request_duration_seconds{method, route}``.
"""

from __future__ import annotations

import time
from typing import Final

from fastapi import APIRouter
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED: Final = "unmatched"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class AdminRequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "xds_server_admin_requests",
            "Admin API requests by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "xds_server_admin_request_duration_seconds",
            "Admin API request duration (for event streams: how long they stayed open).",
            ["method", "route"],
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetricsMiddleware:
    """Counts every HTTP request once it has been answered (or has failed)."""

    def __init__(self, app: ASGIApp, metrics: AdminRequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.observe(
                scope.get("method", "GET"), _route_of(scope), status, time.perf_counter() - started
            )


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
