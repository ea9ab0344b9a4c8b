"""One fleet across replicas: what each replica publishes of its proxies, and what it read of
the others'.

Replicas sharing ``--store consul-kv:PREFIX`` publish their connected proxies under
``PREFIX-fleet/<replica-id>/<chunk>`` (zlib-compressed JSON: a few hundred bytes per proxy
before compression, chunks of at most :data:`CHUNK_BYTES` of JSON, so that no value nears
Consul's 512 KB limit and 1,000 proxies fit in one transaction), held by a Consul session
that dies with the replica (``consul.sessions``). Every replica reads the whole
``PREFIX-fleet/`` tree with a blocking query and keeps the others' summaries here; the admin
API lists them beside its own live proxies.

A chunk's value, once decompressed (``zlib.decompress``; plain JSON is read too)::

    {"replica": "host:18000", "ads": "10.0.0.5:18000", "proxies": [
      {"node_id": "web-1", "group": "edge", "peer": "ipv4:10.0.0.9:50000",
       "envoy_version": "1.40.0", "user_agent": "envoy 1.40.0", "client_type": "envoy",
       "stream_kind": "ads-sotw", "streams": 1, "connected_since": 1764780000.0,
       "types": {"CDS": {"status": "SYNCED", "sent_version": "…", "acked_version": "…",
                         "resources": 3, "last_nack": null}, …}}]}

Pure functions: encoding depends only on the proxies given, and equal input gives equal bytes
(the publisher writes only the chunks whose bytes changed).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xds_server.cache.types import PUSH_ORDER, SHORT_NAMES
from xds_server.status.registry import ProxyEvent, ProxyRegistry, ProxyStatus, TypeStatus

log = logging.getLogger("xds_server.status")

#: Bytes of one chunk's JSON at most, before compression (about 1,000 proxies).
CHUNK_BYTES = 480 * 1024
#: zlib's level: JSON of summaries compresses about 10x; higher levels gain little.
ZLIB_LEVEL = 6


@dataclass(frozen=True, slots=True)
class Replica:
    """This replica: its id in the fleet and the ADS address its proxies reach."""

    id: str
    ads: str


def _short(type_url: str) -> str:
    return SHORT_NAMES.get(type_url) or type_url.rsplit(".", 1)[-1]


def _type_summary(status: TypeStatus) -> dict[str, Any]:
    nack = status.last_nack
    return {
        "status": status.status.value,
        "sent_version": status.sent_version,
        "acked_version": status.acked_version,
        "resources": sum(1 for version in list(status.held.values()) if version),
        "last_nack": (
            {"version": nack.version, "message": nack.message, "at": nack.at}
            if nack is not None
            else None
        ),
    }


def proxy_summary(proxy: ProxyStatus) -> dict[str, Any]:
    """What the fleet knows of one connected proxy (no resource, no secret)."""
    known = [t for t in PUSH_ORDER if t in proxy.types]
    ordered = known + sorted(t for t in proxy.types if t not in PUSH_ORDER)
    return {
        "node_id": proxy.node_id,
        "group": proxy.group,
        "peer": proxy.peer,
        "envoy_version": proxy.envoy_version,
        "user_agent": proxy.user_agent,
        "client_type": proxy.client_type,
        "stream_kind": proxy.stream_kind.value,
        "streams": max(proxy.streams, 0),
        "connected_since": proxy.connected_since,
        "types": {_short(t): _type_summary(proxy.types[t]) for t in ordered},
    }


def fleet_values(
    proxies: Iterable[ProxyStatus], replica: Replica, chunk_bytes: int = CHUNK_BYTES
) -> dict[str, bytes]:
    """The chunks this replica publishes: ``{"0000": json, …}`` (one, empty, without proxies).

    Proxies are sorted by node id, so a change to one proxy changes one chunk only (unless a
    proxy connects or leaves, which shifts the chunks after it).
    """
    head = {"replica": replica.id, "ads": replica.ads}
    encoded = [
        json.dumps(proxy_summary(p), separators=(",", ":"), sort_keys=True)
        for p in sorted(proxies, key=lambda p: p.node_id)
        if p.connected
    ]
    chunks: list[list[str]] = [[]]
    size = 0
    for text in encoded:
        if chunks[-1] and size + len(text) > chunk_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(text)
        size += len(text) + 1
    prefix = json.dumps(head, separators=(",", ":"), sort_keys=True)[:-1]
    return {
        f"{n:04d}": zlib.compress(f'{prefix},"proxies":[{",".join(chunk)}]}}'.encode(), ZLIB_LEVEL)
        for n, chunk in enumerate(chunks)
    }


def decode_chunk(value: bytes) -> tuple[str, str, list[dict[str, Any]]] | None:
    """(replica id, ADS address, proxy summaries) of one chunk; None if it is not one."""
    try:
        data = json.loads(zlib.decompress(value) if value[:1] == b"x" else value)
    except (ValueError, zlib.error):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("replica"), str):
        return None
    proxies = data.get("proxies")
    if not isinstance(proxies, list):
        return None
    kept = [p for p in proxies if isinstance(p, dict) and isinstance(p.get("node_id"), str)]
    return data["replica"], str(data.get("ads", "")), kept


@dataclass(frozen=True, slots=True)
class RemoteProxy:
    """A proxy connected to another replica, as that replica last published it."""

    replica: str
    ads: str
    summary: Mapping[str, Any]

    @property
    def node_id(self) -> str:
        return str(self.summary["node_id"])

    @property
    def group(self) -> str:
        return str(self.summary.get("group", ""))


@dataclass
class FleetView:
    """The other replicas' proxies (read from Consul KV), beside this replica's own."""

    replica: Replica
    _remote: dict[str, RemoteProxy] = field(default_factory=dict)
    _replicas: frozenset[str] = frozenset()

    def update(self, values: Mapping[str, bytes]) -> None:
        """The fleet tree as read: ``{key: value}`` of the keys a live session holds."""
        remote: dict[str, RemoteProxy] = {}
        replicas: set[str] = set()
        for key in sorted(values):
            decoded = decode_chunk(values[key])
            if decoded is None:
                log.debug("fleet: %s is not a fleet summary", key)
                continue
            replica, ads, proxies = decoded
            replicas.add(replica)
            if replica == self.replica.id:
                continue
            for summary in proxies:
                remote[summary["node_id"]] = RemoteProxy(replica, ads, summary)
        self._remote = remote
        self._replicas = frozenset(replicas)

    def remote(self) -> list[RemoteProxy]:
        return sorted(self._remote.values(), key=lambda p: p.node_id)

    def get(self, node_id: str) -> RemoteProxy | None:
        return self._remote.get(node_id)

    def replicas(self) -> frozenset[str]:
        """Every replica that publishes (this one included, once it has)."""
        return self._replicas | {self.replica.id}


class FleetSummaries:
    """This replica's chunks, encoded again only after a proxy event (connect, send, ACK…):
    an idle fleet costs the publisher nothing per interval."""

    def __init__(self, registry: ProxyRegistry, replica: Replica) -> None:
        self._registry = registry
        self._replica = replica
        self._dirty = True
        self._values: dict[str, bytes] = {}
        registry.observe(self._on_event)

    def _on_event(self, event: ProxyEvent) -> None:
        self._dirty = True

    def values(self) -> dict[str, bytes]:
        if self._dirty:
            self._dirty = False
            proxies = self._registry.proxies(include_disconnected=False)
            self._values = fleet_values(proxies, self._replica)
        return self._values
