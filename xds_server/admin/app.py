"""The FastAPI application of the admin API."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI

from xds_server.admin.health import ReadinessCheck, health_router


def create_admin_app(readiness: Mapping[str, ReadinessCheck]) -> FastAPI:
    app = FastAPI(
        title="xds-server admin API",
        version="1",
        description="Manage listeners, routes and policies served to Envoy over xDS.",
    )
    app.include_router(health_router(readiness))
    return app
