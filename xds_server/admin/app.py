"""The FastAPI application of the admin API: config CRUD, apply, history, health, proxies,
events and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from xds_server.admin.console import console_router, services_router
from xds_server.admin.context import AdminContext
from xds_server.admin.errors import install_error_handlers
from xds_server.admin.kinds import resource_kinds
from xds_server.admin.middleware.limits import BodySizeLimit
from xds_server.admin.middleware.request_metrics import (
    AdminRequestMetrics,
    RequestMetricsMiddleware,
)
from xds_server.admin.middleware.revision_header import ConfigRevisionHeader
from xds_server.admin.openapi.components import add_components
from xds_server.admin.routes.apply import apply_router
from xds_server.admin.routes.events import events_router
from xds_server.admin.routes.health import health_router
from xds_server.admin.routes.history import history_router
from xds_server.admin.routes.mesh import mesh_router
from xds_server.admin.routes.metrics import metrics_router
from xds_server.admin.routes.proxies import proxies_router
from xds_server.admin.routes.resources import resource_router
from xds_server.admin.services import AdminServices

DESCRIPTION = """\
Manage the listeners, routes and policies served to Envoy over xDS.

Every resource is one document `{"kind", "name", "spec"}`; reads add `revision`,
`updated_at` and `warnings`. Every write is validated so that Envoy accepts the result,
bumps the config revision (kept in history) and can be dry-run with `?dry_run=true`.
Errors are `application/problem+json` (RFC 9457) with an `errors` list of `{field, reason}`.

`/v1/proxies` shows every connected Envoy and its sync status per resource type (the facts
CSDS serves on the ADS port), `/v1/events` streams what happens (server-sent events),
`/metrics` exposes Prometheus metrics.
"""


class AdminApp(FastAPI):
    """A FastAPI app whose OpenAPI document includes the hand-decoded bodies' schemas."""

    def openapi(self) -> dict[str, Any]:
        return add_components(super().openapi())


def create_admin_app(context: AdminContext) -> FastAPI:
    """The admin app over ``context`` (store, inventory, preview and readiness)."""
    app = AdminApp(
        title="xds-server admin API",
        version="1",
        description=DESCRIPTION,
        separate_input_output_schemas=False,
    )
    install_error_handlers(app)
    services = AdminServices.build(context)
    app.include_router(health_router(context.readiness))
    for kind in resource_kinds():
        app.include_router(resource_router(kind, services))
    app.include_router(mesh_router(context.mesh_rotate_root, context.mesh_status))
    app.include_router(apply_router(services))
    app.include_router(history_router(services))
    app.include_router(proxies_router(context.proxies, context.cache, context.fleet))
    app.include_router(events_router(context.events))
    app.include_router(metrics_router(context.metrics))
    app.include_router(services_router(context.inventory))
    app.include_router(console_router())
    app.add_middleware(ConfigRevisionHeader, store=context.store)
    app.add_middleware(BodySizeLimit, max_bytes=context.max_body_bytes)
    # Outermost, so it sees every answer, refusals by the middlewares above included.
    app.add_middleware(RequestMetricsMiddleware, metrics=AdminRequestMetrics(context.metrics))
    return app
