"""Per-proxy sync status: what each connected Envoy was sent, ACKed and rejected.

The server records; the admin API, CSDS, metrics and the event stream read (the registry's
observers get a :class:`ProxyEvent` for each connect, disconnect, send, ACK and NACK).
Statuses follow CSDS: ``NOT_SENT`` (nothing sent yet), ``STALE`` (sent, not yet ACKed),
``SYNCED`` (the last response was ACKed), ``NACKED`` (the last response was rejected; Envoy
keeps its previous config).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from xds_server.cache.clients import client_type


class SyncStatus(StrEnum):
    NOT_SENT = "NOT_SENT"
    STALE = "STALE"
    SYNCED = "SYNCED"
    NACKED = "NACKED"


class StreamKind(StrEnum):
    ADS_SOTW = "ads-sotw"
    ADS_DELTA = "ads-delta"
    SOTW = "sotw"
    DELTA = "delta"


class ProxyEventKind(StrEnum):
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    SEND = "send"
    ACK = "ack"
    NACK = "nack"


@dataclass(slots=True)
class Nack:
    version: str
    nonce: str
    message: str
    at: float  # wall-clock seconds


@dataclass(slots=True)
class TypeStatus:
    type_url: str
    sent_version: str = ""
    sent_nonce: str = ""
    sent_at: float | None = None
    #: Monotonic time the cache state behind the last response was set: the start of the
    #: convergence interval that ends at the proxy's ACK.
    sent_state_set_at: float | None = None
    acked_version: str = ""
    acked_at: float | None = None
    last_nack: Nack | None = None
    responses: int = 0
    bytes_sent: int = 0
    #: name -> version of what the proxy holds of this type (a live view of the stream's
    #: bookkeeping, not a copy, so status costs no memory per resource).
    held: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> SyncStatus:
        if not self.sent_nonce:
            # Nothing sent on this stream; a delta client that reconnected holding every
            # resource at its current version needed nothing (``XdsStream.record_held``).
            if self.acked_at is not None and self.acked_version == self.sent_version:
                return SyncStatus.SYNCED
            return SyncStatus.NOT_SENT
        if self.last_nack is not None and self.last_nack.nonce == self.sent_nonce:
            return SyncStatus.NACKED
        if self.acked_version == self.sent_version and self.acked_at is not None:
            return SyncStatus.SYNCED
        return SyncStatus.STALE


@dataclass(slots=True)
class ProxyStatus:
    node_id: str
    group: str
    peer: str
    envoy_version: str
    stream_kind: StreamKind
    connected_since: float
    streams: int = 0
    disconnected_at: float | None = None
    types: dict[str, TypeStatus] = field(default_factory=dict)
    #: The node as the proxy described itself (an ``envoy.config.core.v3.Node``).
    node: Any = None

    @property
    def connected(self) -> bool:
        return self.disconnected_at is None

    @property
    def user_agent(self) -> str:
        """``node.user_agent_name`` and its version: "envoy 1.40.0", "gRPC Python 1.76.0"."""
        name = str(self.node.user_agent_name) if self.node is not None else ""
        return " ".join(part for part in (name, self.envoy_version) if part)

    @property
    def client_type(self) -> str:
        """``envoy`` or ``grpc`` (a proxyless gRPC application), as the cache serves it."""
        return client_type(self.node).value

    @property
    def zone(self) -> str:
        """``node.locality.zone``: the proxy is served its group's snapshot as seen from it."""
        return str(self.node.locality.zone) if self.node is not None else ""

    def type_status(self, type_url: str) -> TypeStatus:
        status = self.types.get(type_url)
        if status is None:
            status = self.types[type_url] = TypeStatus(type_url)
        return status


@dataclass(frozen=True, slots=True)
class ProxyEvent:
    """Something that happened to a proxy, for metrics and the event stream."""

    kind: ProxyEventKind
    node_id: str
    group: str
    type_url: str = ""
    version: str = ""
    message: str = ""
    #: Seconds from the cache change to this ACK (``ack`` events only).
    convergence: float | None = None
    bytes: int = 0


Observer = Callable[[ProxyEvent], None]


class ProxyRegistry:
    """Status of every connected proxy, and of recently disconnected ones for a while."""

    def __init__(self, keep_disconnected: float = 300.0, max_disconnected: int = 1000) -> None:
        self._proxies: dict[str, ProxyStatus] = {}
        self._gone: OrderedDict[str, ProxyStatus] = OrderedDict()
        self._keep = keep_disconnected
        self._max_gone = max_disconnected
        self._observers: list[Observer] = []

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def emit(self, event: ProxyEvent) -> None:
        for observer in self._observers:
            observer(event)

    def connect(
        self,
        node_id: str,
        group: str,
        peer: str,
        envoy_version: str,
        kind: StreamKind,
        node: Any = None,
    ) -> ProxyStatus:
        proxy = self._proxies.get(node_id)
        if proxy is None:
            self._gone.pop(node_id, None)
            proxy = ProxyStatus(node_id, group, peer, envoy_version, kind, time.time(), node=node)
            self._proxies[node_id] = proxy
            self.emit(ProxyEvent(ProxyEventKind.CONNECT, node_id, group))
        proxy.streams += 1
        return proxy

    def disconnect(self, proxy: ProxyStatus) -> None:
        proxy.streams -= 1
        if proxy.streams > 0 or self._proxies.get(proxy.node_id) is not proxy:
            return
        del self._proxies[proxy.node_id]
        proxy.disconnected_at = time.time()
        self._gone[proxy.node_id] = proxy
        while len(self._gone) > self._max_gone:
            self._gone.popitem(last=False)
        self.emit(ProxyEvent(ProxyEventKind.DISCONNECT, proxy.node_id, proxy.group))

    def proxies(self, include_disconnected: bool = True) -> list[ProxyStatus]:
        self._expire()
        found = list(self._proxies.values())
        if include_disconnected:
            found.extend(self._gone.values())
        return sorted(found, key=lambda p: p.node_id)

    def get(self, node_id: str) -> ProxyStatus | None:
        self._expire()
        return self._proxies.get(node_id) or self._gone.get(node_id)

    def connected_count(self) -> int:
        return len(self._proxies)

    def _expire(self) -> None:
        cutoff = time.time() - self._keep
        while self._gone:
            oldest = next(iter(self._gone.values()))
            if oldest.disconnected_at is not None and oldest.disconnected_at >= cutoff:
                break
            self._gone.popitem(last=False)
