"""``GET /v1/services``: the registry's inventory as the server sees it (read only).

What the Services page shows: each service's instances (address, port, weight, health, zone,
region, priority, metadata) and its mesh sidecars. Which routes send to a service is config,
read from the route collections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from xds_server.admin.openapi import responses as docs
from xds_server.model import Endpoint, Inventory, Service


class EndpointView(BaseModel):
    address: str
    port: int
    weight: int
    health: str = Field(description="healthy, degraded, unhealthy (as sent to Envoy).")
    zone: str
    region: str
    priority: int = Field(description="0: the local datacenter; higher: failover targets.")
    metadata: dict[str, Any] = Field(description="Envoy filter metadata (subsets match it).")


class ServiceView(BaseModel):
    name: str
    endpoints: list[EndpointView]
    mesh_endpoints: list[EndpointView] = Field(description="Its mesh sidecars.")


class ServiceList(BaseModel):
    synced: bool = Field(description="False until the registry's first full read.")
    items: list[ServiceView]


def endpoint_view(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "address": endpoint.address,
        "port": endpoint.port,
        "weight": endpoint.weight,
        "health": endpoint.health.value,
        "zone": endpoint.zone,
        "region": endpoint.region,
        "priority": endpoint.priority,
        "metadata": dict(endpoint.metadata),
    }


def service_view(service: Service) -> dict[str, Any]:
    return {
        "name": service.name,
        "endpoints": [endpoint_view(e) for e in service.endpoints],
        "mesh_endpoints": [endpoint_view(e) for e in service.mesh_endpoints],
    }


def inventory_view(inventory: Inventory) -> dict[str, Any]:
    return {
        "synced": inventory.synced,
        "items": [service_view(inventory.services[n]) for n in sorted(inventory.services)],
    }


def services_router(inventory: Callable[[], Inventory]) -> APIRouter:
    router = APIRouter(tags=["services"])

    @router.get(
        "/v1/services",
        operation_id="list_services",
        summary="The registry's services and their instances, as the server sees them",
        responses={
            200: {"model": ServiceList, "description": "Every service, by name."},
            **docs.problems(),
        },
    )
    async def list_services() -> Response:
        return JSONResponse(inventory_view(inventory()))

    return router
