"""The admin API's own request metrics, on the app's ``CollectorRegistry`` (its own, never the
process-global one, so several servers can run in one test process; ``GET /metrics`` exposes
it):

- ``xds_server_admin_requests_total{method, route, status}``: by route *template*
  (``/v1/routes/{name}``, never the raw path, so the label set stays bounded; requests that
  match no route are ``route="unmatched"``);
- ``xds_server_admin_request_duration_seconds{method, route}``.
"""

from __future__ import annotations

import time
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
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
