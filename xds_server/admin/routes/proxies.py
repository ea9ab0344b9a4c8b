"""``GET /v1/proxies``: every Envoy connected (or recently disconnected) and its sync status.

- ``GET /v1/proxies``: ``{items}``, by node id; filters ``group``, ``status``, ``connected``.
  With ``--store consul-kv``, the proxies of every replica of the fleet (``replica``: which
  one holds it), this replica's from its registry, the others' from Consul KV.
- ``GET /v1/proxies/{node_id}``: one proxy (of any replica).
- ``GET /v1/proxies/{node_id}/config``: exactly what it holds, as JSON (``proxy_views``): every
  resource it was sent (and has not been told is gone); ``resource`` is null once the
  snapshot of its group has moved on. Secrets are redacted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.responses import JSONResponse, Response

from xds_server.admin.openapi import responses as docs
from xds_server.admin.problem import ApiError
from xds_server.admin.proxy_views import (
    ProxyConfig,
    ProxyList,
    ProxyView,
    proxy_config,
    proxy_view,
    remote_proxy_view,
)
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.status import ProxyRegistry, ProxyStatus, SyncStatus
from xds_server.status.fleet import FleetView

NodeId = Annotated[str, Path(description="The node id the Envoy sent (its --service-node).")]


def proxies_router(
    registry: ProxyRegistry, cache: SnapshotCache, fleet: FleetView | None = None
) -> APIRouter:
    router = APIRouter(prefix="/v1/proxies", tags=["proxies"])
    _add_list(router, registry, fleet)
    _add_one(router, registry, cache, fleet)
    return router


def _missing(node_id: str) -> ApiError:
    return ApiError(
        404, "not-found", f"no proxy with node id {node_id!r} is or was recently connected"
    )


def _find(registry: ProxyRegistry, node_id: str) -> ProxyStatus:
    proxy = registry.get(node_id)
    if proxy is None:
        raise _missing(node_id)
    return proxy


def _listed(
    registry: ProxyRegistry,
    fleet: FleetView | None,
    group: str | None,
    status: SyncStatus | None,
    connected: bool | None,
) -> list[dict[str, Any]]:
    """The views of the proxies that every given filter keeps, by node id."""
    views = [
        proxy_view(proxy, fleet=fleet)
        for proxy in registry.proxies(include_disconnected=connected is not True)
    ]
    if fleet is not None and connected is not False:
        # A proxy that moved here is shown from the live registry, not the stale summary.
        local = {view["node_id"] for view in views if view["connected"]}
        views.extend(remote_proxy_view(p) for p in fleet.remote() if p.node_id not in local)
        views.sort(key=lambda view: str(view["node_id"]))
    items = []
    for view in views:
        if group is not None and view["group"] != group:
            continue
        if connected is False and view["connected"]:
            continue
        if status is not None and view["status"] != status.value:
            continue
        items.append(view)
    return items


def _add_list(router: APIRouter, registry: ProxyRegistry, fleet: FleetView | None) -> None:
    @router.get(
        "",
        operation_id="list_proxies",
        summary="Connected and recently disconnected proxies, with their sync status",
        responses={
            200: {"model": ProxyList, "description": "Every proxy, by node id."},
            **docs.problems(),
        },
    )
    async def list_proxies(
        group: Annotated[str | None, Query(description="Only this proxy group.")] = None,
        status: Annotated[
            SyncStatus | None, Query(description="Only proxies with this overall status.")
        ] = None,
        connected: Annotated[
            bool | None, Query(description="Only connected (true) or disconnected (false).")
        ] = None,
    ) -> Response:
        return JSONResponse({"items": _listed(registry, fleet, group, status, connected)})


def _add_one(
    router: APIRouter, registry: ProxyRegistry, cache: SnapshotCache, fleet: FleetView | None
) -> None:
    @router.get(
        "/{node_id}",
        operation_id="get_proxy",
        summary="One proxy and its sync status per resource type",
        responses={200: {"model": ProxyView, "description": "The proxy."}, **docs.problems(404)},
    )
    async def get_proxy(node_id: NodeId) -> Response:
        proxy = registry.get(node_id)
        remote = fleet.get(node_id) if fleet is not None else None
        if proxy is not None and (proxy.connected or remote is None):
            return JSONResponse(proxy_view(proxy, cache, fleet))
        if remote is None:
            raise _missing(node_id)
        return JSONResponse(remote_proxy_view(remote))

    @router.get(
        "/{node_id}/config",
        operation_id="get_proxy_config",
        summary="What one proxy holds, as sent to it (secrets redacted)",
        responses={
            200: {"model": ProxyConfig, "description": "Its resources per type."},
            **docs.problems(404),
        },
    )
    async def get_proxy_config(node_id: NodeId) -> Response:
        remote = fleet.get(node_id) if fleet is not None else None
        proxy = registry.get(node_id)
        if remote is not None and (proxy is None or not proxy.connected):
            raise ApiError(
                404,
                "not-found",
                f"proxy {node_id!r} is connected to replica {remote.replica!r}: ask that "
                "replica's admin API for what it holds",
            )
        return JSONResponse(proxy_config(_find(registry, node_id), cache))
