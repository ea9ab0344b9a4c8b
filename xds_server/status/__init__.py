"""What every proxy holds and did: the proxy registry (fed by the server's streams), typed
proxy events, and the numbered event log the admin API streams."""

from xds_server.status.events import Event, EventLog, EventType, rfc3339
from xds_server.status.registry import (
    Nack,
    Observer,
    ProxyEvent,
    ProxyEventKind,
    ProxyRegistry,
    ProxyStatus,
    StreamKind,
    SyncStatus,
    TypeStatus,
)

__all__ = [
    "Event",
    "EventLog",
    "EventType",
    "Nack",
    "Observer",
    "ProxyEvent",
    "ProxyEventKind",
    "ProxyRegistry",
    "ProxyStatus",
    "StreamKind",
    "SyncStatus",
    "TypeStatus",
    "rfc3339",
]
