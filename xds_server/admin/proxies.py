"""``GET /v1/proxies``: every Envoy connected (or recently disconnected) and its sync status.

- ``GET /v1/proxies``: ``{items}``, by node id; filters ``group``, ``status``, ``connected``.
- ``GET /v1/proxies/{node_id}``: one proxy.
- ``GET /v1/proxies/{node_id}/config``: exactly what it holds, as JSON: every resource it
  was sent (and has not been told is gone), decoded from the bytes it was sent while the
  current snapshot of its group still has that version (``resource`` is null once the
  snapshot has moved on). Secrets are redacted: private keys, passwords, session ticket keys,
  generic secrets and any inline bytes are replaced by ``"[redacted]"``; names stay.

The facts are those of CSDS on the ADS port (``ClientStatusDiscoveryService``): statuses
``SYNCED`` (the last response was ACKed), ``STALE`` (sent, not ACKed yet), ``NOT_SENT`` and
``NACKED`` (the last response was rejected; ``last_nack`` has Envoy's message).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Query
from google.protobuf import any_pb2, json_format
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from xds_server.admin import responses as docs
from xds_server.admin.events import rfc3339
from xds_server.admin.problem import ApiError
from xds_server.cache.snapshot import Resource
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.status import ProxyRegistry, ProxyStatus, StreamKind, SyncStatus, TypeStatus
from xds_server.cache.types import PUSH_ORDER, SHORT_NAMES

REDACTED: Final = "[redacted]"
#: Fields whose whole value is secret, wherever they appear in a resource.
_SECRET_FIELDS: Final = frozenset(
    {"private_key", "password", "session_ticket_keys", "generic_secret", "private_key_provider"}
)
#: Overall status of a proxy: the worst of its types.
_SEVERITY: Final = (SyncStatus.NACKED, SyncStatus.STALE, SyncStatus.NOT_SENT, SyncStatus.SYNCED)


class NackView(BaseModel):
    """The last response the proxy rejected."""

    version: str = Field(description="The version that was rejected.")
    message: str = Field(description="Envoy's error_detail message.")
    at: str = Field(description="RFC 3339, UTC.", json_schema_extra={"format": "date-time"})


class TypeStatusView(BaseModel):
    """The proxy's state for one resource type."""

    type: str = Field(description="CDS, EDS, LDS, RDS or SDS.")
    type_url: str
    status: SyncStatus
    sent_version: str = Field(description="The version of the last response ('' before one).")
    sent_at: str | None = Field(json_schema_extra={"format": "date-time"})
    acked_version: str = Field(description="The version the proxy last ACKed.")
    acked_at: str | None = Field(json_schema_extra={"format": "date-time"})
    last_nack: NackView | None
    responses: int = Field(description="Responses sent on this type.")
    bytes_sent: int
    resources: int = Field(description="How many resources of this type the proxy holds.")


class ProxyView(BaseModel):
    """One Envoy, as it introduced itself, with its sync status per resource type."""

    node_id: str
    group: str = Field(description="The proxy group: the node's cluster.")
    peer: str = Field(description="The gRPC peer address, e.g. ipv4:127.0.0.1:50000.")
    envoy_version: str
    stream_kind: StreamKind = Field(
        description="ads-sotw, ads-delta, or sotw / delta (one stream per type)."
    )
    streams: int = Field(description="Open xDS streams of this node.")
    connected: bool
    connected_since: str = Field(json_schema_extra={"format": "date-time"})
    disconnected_at: str | None = Field(
        description="Set while a disconnected proxy is still listed (for a while).",
        json_schema_extra={"format": "date-time"},
    )
    status: SyncStatus = Field(description="The worst status of its types.")
    types: dict[str, TypeStatusView] = Field(description="By short type name (CDS, EDS, …).")


class ProxyList(BaseModel):
    items: list[ProxyView]


class HeldResource(BaseModel):
    name: str
    version: str
    resource: dict[str, Any] | None = Field(
        description="The resource as JSON (proto field names, @type first); null when the "
        "group's current snapshot no longer has this version."
    )


class TypeConfig(BaseModel):
    type_url: str
    status: SyncStatus
    version: str = Field(description="The version last sent.")
    resources: list[HeldResource]


class ProxyConfig(BaseModel):
    """What one proxy holds, per type, as sent to it (secrets redacted)."""

    node_id: str
    group: str
    connected: bool
    types: dict[str, TypeConfig]


def _time(seconds: float | None) -> str | None:
    return rfc3339(seconds) if seconds is not None else None


def short_name(type_url: str) -> str:
    return SHORT_NAMES.get(type_url) or type_url.rsplit(".", 1)[-1]


def _ordered(proxy: ProxyStatus) -> list[TypeStatus]:
    known = [proxy.types[t] for t in PUSH_ORDER if t in proxy.types]
    return known + [proxy.types[t] for t in sorted(proxy.types) if t not in PUSH_ORDER]


def overall_status(proxy: ProxyStatus) -> SyncStatus:
    statuses = {status.status for status in proxy.types.values()}
    for status in _SEVERITY:
        if status in statuses:
            return status
    return SyncStatus.NOT_SENT


def type_view(status: TypeStatus) -> dict[str, Any]:
    nack = status.last_nack
    return {
        "type": short_name(status.type_url),
        "type_url": status.type_url,
        "status": status.status.value,
        "sent_version": status.sent_version,
        "sent_at": _time(status.sent_at),
        "acked_version": status.acked_version,
        "acked_at": _time(status.acked_at),
        "last_nack": (
            {"version": nack.version, "message": nack.message, "at": rfc3339(nack.at)}
            if nack is not None
            else None
        ),
        "responses": status.responses,
        "bytes_sent": status.bytes_sent,
        "resources": sum(1 for version in list(status.held.values()) if version),
    }


def proxy_view(proxy: ProxyStatus) -> dict[str, Any]:
    return {
        "node_id": proxy.node_id,
        "group": proxy.group,
        "peer": proxy.peer,
        "envoy_version": proxy.envoy_version,
        "stream_kind": proxy.stream_kind.value,
        "streams": max(proxy.streams, 0),
        "connected": proxy.connected,
        "connected_since": rfc3339(proxy.connected_since),
        "disconnected_at": _time(proxy.disconnected_at),
        "status": overall_status(proxy).value,
        "types": {short_name(s.type_url): type_view(s) for s in _ordered(proxy)},
    }


def redact(value: Any) -> Any:
    """A resource's JSON with every secret value replaced (names and structure kept)."""
    if isinstance(value, dict):
        return {
            key: REDACTED if key in _SECRET_FIELDS or key == "inline_bytes" else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def resource_json(resource: Resource, message: Any = None) -> dict[str, Any]:
    """The resource as sent (its serialised bytes, decoded), or from its message when the
    type is not known to this process's descriptor pool."""
    try:
        decoded: dict[str, Any] = json_format.MessageToDict(
            any_pb2.Any(type_url=resource.type_url, value=resource.body),
            preserving_proto_field_name=True,
        )
    except (TypeError, KeyError, json_format.Error):
        if message is None:
            return {"@type": resource.type_url, "undecodable": True}
        decoded = {
            "@type": resource.type_url,
            **json_format.MessageToDict(message, preserving_proto_field_name=True),
        }
    return dict(redact(decoded))


def proxy_config(proxy: ProxyStatus, cache: SnapshotCache) -> dict[str, Any]:
    snapshot = cache.snapshot_for(proxy.group)
    types: dict[str, Any] = {}
    for status in _ordered(proxy):
        present = snapshot.of_type(status.type_url)
        messages = snapshot.messages.get(status.type_url, {})
        held = []
        for name, version in sorted(dict(status.held).items()):
            if not version:
                continue  # told it is absent
            resource = present.get(name)
            body = (
                resource_json(resource, messages.get(name))
                if resource is not None and resource.version == version
                else None
            )
            held.append({"name": name, "version": version, "resource": body})
        types[short_name(status.type_url)] = {
            "type_url": status.type_url,
            "status": status.status.value,
            "version": status.sent_version,
            "resources": held,
        }
    return {
        "node_id": proxy.node_id,
        "group": proxy.group,
        "connected": proxy.connected,
        "types": types,
    }


NodeId = Annotated[str, Path(description="The node id the Envoy sent (its --service-node).")]


def proxies_router(registry: ProxyRegistry, cache: SnapshotCache) -> APIRouter:
    router = APIRouter(prefix="/v1/proxies", tags=["proxies"])

    def find(node_id: str) -> ProxyStatus:
        proxy = registry.get(node_id)
        if proxy is None:
            raise ApiError(
                404, "not-found", f"no proxy with node id {node_id!r} is or was recently connected"
            )
        return proxy

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
        items = []
        for proxy in registry.proxies(include_disconnected=connected is not True):
            if group is not None and proxy.group != group:
                continue
            if connected is False and proxy.connected:
                continue
            view = proxy_view(proxy)
            if status is not None and view["status"] != status.value:
                continue
            items.append(view)
        return JSONResponse({"items": items})

    @router.get(
        "/{node_id}",
        operation_id="get_proxy",
        summary="One proxy and its sync status per resource type",
        responses={200: {"model": ProxyView, "description": "The proxy."}, **docs.problems(404)},
    )
    async def get_proxy(node_id: NodeId) -> Response:
        return JSONResponse(proxy_view(find(node_id)))

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
        return JSONResponse(proxy_config(find(node_id), cache))

    return router
