"""What ``/v1/proxies`` shows: each proxy's sync status, and what it holds, as JSON.

The facts are those of CSDS on the ADS port (``ClientStatusDiscoveryService``): statuses
``SYNCED`` (the last response was ACKed), ``STALE`` (sent, not ACKed yet), ``NOT_SENT`` and
``NACKED`` (the last response was rejected; ``last_nack`` has Envoy's message). What a proxy
holds is decoded from the bytes it was sent while the current snapshot of its group still has
that version, with secrets redacted by ``cache.redaction``, the one redaction CSDS uses too
(a private key reads ``{"inline_string": "[redacted]"}``, as in Envoy's ``/config_dump``).

With ``--store consul-kv`` the list also has the proxies of the other replicas (``replica``
names the one that holds each), from the summaries they publish (``status.fleet``): their
``sent_at``/``acked_at`` are null and their ``responses``/``bytes_sent`` 0 (not published).
"""

from __future__ import annotations

import copy
from typing import Any, Final

from google.protobuf import any_pb2, json_format
from pydantic import BaseModel, Field

from xds_server.cache.clients import client_type
from xds_server.cache.redaction import redact, redacted_body
from xds_server.cache.snapshot import Resource
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import PUSH_ORDER, SECRET, SHORT_NAMES
from xds_server.model.mesh import IDENTITY_SECRET_PREFIX
from xds_server.model.pki import PemError, certificate_summaries
from xds_server.status import (
    ProxyStatus,
    StreamKind,
    SyncStatus,
    TypeStatus,
    rfc3339,
)
from xds_server.status.fleet import FleetView, RemoteProxy

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
    user_agent: str = Field(
        default="",
        description="node.user_agent_name and its version, e.g. 'envoy 1.40.0' or "
        "'gRPC Python 1.76.0'.",
    )
    client_type: str = Field(
        default="envoy", description="envoy, or grpc for a proxyless gRPC application."
    )
    replica: str | None = Field(
        default=None,
        description="The replica the proxy is connected to (with --store consul-kv); null "
        "when this server is not part of a fleet.",
    )
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
    identities: list[IdentityView] = Field(
        default=[], description="Mesh identities it holds (sidecars; none for other proxies)."
    )


class IdentityView(BaseModel):
    """A mesh workload identity the proxy holds (public facts of its certificate)."""

    service: str
    spiffe_id: str | None = Field(description="The certificate's URI SAN.")
    serial: str = Field(description="Serial number, hex.")
    not_after: str = Field(json_schema_extra={"format": "date-time"})
    version: str = Field(description="The SDS secret's version the proxy holds.")


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


def held_identities(proxy: ProxyStatus, cache: SnapshotCache) -> list[dict[str, Any]]:
    """The mesh identities ``proxy`` holds: the ``mesh/identity/…`` secrets it was sent, at
    the version it holds, while the current snapshot of its group still has that version."""
    status = proxy.types.get(SECRET)
    if status is None:
        return []
    present = cache.snapshot_for(proxy.group, proxy.zone, client_type(proxy.node)).of_type(SECRET)
    found = []
    for name, version in sorted(dict(status.held).items()):
        resource = present.get(name)
        if not name.startswith(IDENTITY_SECRET_PREFIX) or resource is None:
            continue
        if resource.version != version:
            continue
        chain = resource_json(resource).get("tls_certificate", {}).get("certificate_chain", {})
        try:
            (leaf, *_) = certificate_summaries(chain.get("inline_string", ""))
        except (PemError, ValueError):
            continue
        spiffe = next((n[4:] for n in leaf.subject_alt_names if n.startswith("URI:")), None)
        found.append(
            {
                "service": name.removeprefix(IDENTITY_SECRET_PREFIX),
                "spiffe_id": spiffe,
                "serial": leaf.serial_number,
                "not_after": leaf.as_json()["not_after"],
                "version": version,
            }
        )
    return found


def proxy_view(
    proxy: ProxyStatus, cache: SnapshotCache | None = None, fleet: FleetView | None = None
) -> dict[str, Any]:
    return {
        "node_id": proxy.node_id,
        "group": proxy.group,
        "peer": proxy.peer,
        "envoy_version": proxy.envoy_version,
        "user_agent": proxy.user_agent,
        "client_type": proxy.client_type,
        "replica": fleet.replica.id if fleet is not None else None,
        "stream_kind": proxy.stream_kind.value,
        "streams": max(proxy.streams, 0),
        "connected": proxy.connected,
        "connected_since": rfc3339(proxy.connected_since),
        "disconnected_at": _time(proxy.disconnected_at),
        "status": overall_status(proxy).value,
        "types": {short_name(s.type_url): type_view(s) for s in _ordered(proxy)},
        "identities": held_identities(proxy, cache) if cache is not None else [],
    }


def _remote_type_view(short: str, summary: Any) -> dict[str, Any]:
    entry = summary if isinstance(summary, dict) else {}
    nack = entry.get("last_nack")
    type_url = next((url for url, name in SHORT_NAMES.items() if name == short), short)
    return {
        "type": short,
        "type_url": type_url,
        "status": str(entry.get("status", SyncStatus.NOT_SENT.value)),
        "sent_version": str(entry.get("sent_version", "")),
        "sent_at": None,
        "acked_version": str(entry.get("acked_version", "")),
        "acked_at": None,
        "last_nack": (
            {
                "version": str(nack.get("version", "")),
                "message": str(nack.get("message", "")),
                "at": rfc3339(float(nack.get("at", 0.0))),
            }
            if isinstance(nack, dict)
            else None
        ),
        "responses": 0,
        "bytes_sent": 0,
        "resources": int(entry.get("resources", 0)),
    }


def remote_proxy_view(remote: RemoteProxy) -> dict[str, Any]:
    """A proxy of another replica, from the summary that replica published."""
    summary = remote.summary
    raw_types = summary.get("types")
    types = {
        str(short): _remote_type_view(str(short), entry)
        for short, entry in (raw_types.items() if isinstance(raw_types, dict) else ())
    }
    statuses = {t["status"] for t in types.values()}
    overall = next((s.value for s in _SEVERITY if s.value in statuses), SyncStatus.NOT_SENT.value)
    return {
        "node_id": remote.node_id,
        "group": remote.group,
        "peer": str(summary.get("peer", "")),
        "envoy_version": str(summary.get("envoy_version", "")),
        "user_agent": str(summary.get("user_agent", "")),
        "client_type": str(summary.get("client_type", "envoy")),
        "replica": remote.replica,
        "stream_kind": str(summary.get("stream_kind", StreamKind.ADS_SOTW.value)),
        "streams": int(summary.get("streams", 1)),
        "connected": True,
        "connected_since": rfc3339(float(summary.get("connected_since", 0.0))),
        "disconnected_at": None,
        "status": overall,
        "types": types,
        "identities": [],
    }


def resource_json(resource: Resource, message: Any = None) -> dict[str, Any]:
    """The resource as sent (its serialised bytes, decoded, secrets redacted), or from its
    message when the type is not known to this process's descriptor pool."""
    body = redacted_body(resource.type_url, resource.body)
    try:
        decoded: dict[str, Any] = json_format.MessageToDict(
            any_pb2.Any(type_url=resource.type_url, value=body), preserving_proto_field_name=True
        )
    except (TypeError, KeyError, json_format.Error):
        if message is None:
            return {"@type": resource.type_url, "undecodable": True}
        shown = copy.deepcopy(message)
        redact(shown)
        decoded = {
            "@type": resource.type_url,
            **json_format.MessageToDict(shown, preserving_proto_field_name=True),
        }
    return decoded


def proxy_config(proxy: ProxyStatus, cache: SnapshotCache) -> dict[str, Any]:
    snapshot = cache.snapshot_for(proxy.group, proxy.zone, client_type(proxy.node))
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
