"""Where what happens in the control plane becomes metrics, events and log lines.

The wiring connects the parts' hooks here (the proxy registry's observers, the pipeline's
``on_build``, the store's revisions, the source's status); this module turns each into a
Prometheus update, an event on ``/v1/events`` and, for what an operator should see, one log
line. The parts themselves stay unaware of all three.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry

from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.observability.metrics import (
    MeshFigures,
    ServerMetrics,
    StateReaders,
    no_mesh,
    type_label,
)
from xds_server.pipeline import BuildResult
from xds_server.sources.base import SourceStatus
from xds_server.status import EventLog, EventType, ProxyEvent, ProxyEventKind, ProxyRegistry

log = logging.getLogger("xds_server.events")

#: How often the source's status is looked at for errors and recoveries.
SOURCE_POLL_SECONDS: Final = 0.5


#: The mesh CA's event kinds (``mesh.authority.MeshEvent``) as events of the stream.
_MESH_EVENTS: Final = {
    "ca_ready": EventType.MESH_CA_READY,
    "ca_rotation": EventType.MESH_CA_ROTATION,
    "ca_error": EventType.MESH_CA_ERROR,
    "identity_issued": EventType.MESH_IDENTITY_ISSUED,
    "identity_removed": EventType.MESH_IDENTITY_REMOVED,
}


def _type_name(type_url: str) -> str:
    return type_label(type_url) if type_url else ""


@dataclass
class _SourceSeen:
    ready: bool = False
    error: str | None = None
    #: The source's error count when it was last healthy.
    errors_when_healthy: int = 0


@dataclass
class Observability:
    cache: SnapshotCache
    registry: ProxyRegistry
    source_name: str
    source_status: Callable[[], SourceStatus | None]
    store_revision: Callable[[], int | None]
    mesh_figures: Callable[[], MeshFigures | None] = no_mesh
    metrics_registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    events: EventLog = field(default_factory=EventLog)
    metrics: ServerMetrics = field(init=False)
    _connected_at: dict[str, float] = field(default_factory=dict, init=False)
    _last_versions: dict[str, dict[str, str]] = field(default_factory=dict, init=False)
    _source_seen: _SourceSeen = field(default_factory=lambda: _SourceSeen(), init=False)

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(
            self.metrics_registry,
            StateReaders(
                self.registry,
                self.cache,
                self.source_name,
                self.source_status,
                self.store_revision,
                self.mesh_figures,
            ),
        )
        self.registry.observe(self.on_proxy_event)

    # -- proxies ----------------------------------------------------------------------------

    def on_proxy_event(self, event: ProxyEvent) -> None:
        self.metrics.on_proxy_event(event)
        match event.kind:
            case ProxyEventKind.SEND:
                pass  # counted only: one per response would drown the event stream
            case ProxyEventKind.ACK:
                self._on_ack(event)
            case ProxyEventKind.NACK:
                # The stream logs the NACK (a warning with Envoy's message).
                self._publish_about(event, EventType.NACK, message=event.message)
            case ProxyEventKind.CONNECT:
                self._on_connect(event)
            case ProxyEventKind.DISCONNECT:
                self._on_disconnect(event)

    def _publish_about(self, event: ProxyEvent, type_: EventType, **data: object) -> None:
        """An event about one response of one proxy (an ACK or a NACK)."""
        self.events.publish(
            type_,
            node_id=event.node_id,
            group=event.group,
            resource_type=_type_name(event.type_url),
            version=event.version,
            **data,
        )

    def _on_ack(self, event: ProxyEvent) -> None:
        convergence = event.convergence
        self._publish_about(
            event,
            EventType.ACK,
            convergence_ms=round(convergence * 1000, 3) if convergence is not None else None,
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "ACK node=%s group=%s type=%s version=%s",
                event.node_id,
                event.group,
                _type_name(event.type_url),
                event.version,
            )

    def _on_connect(self, event: ProxyEvent) -> None:
        self._connected_at[event.node_id] = time.monotonic()
        proxy = self.registry.get(event.node_id)
        self.events.publish(
            EventType.CONNECT,
            node_id=event.node_id,
            group=event.group,
            peer=proxy.peer if proxy else "",
            envoy_version=proxy.envoy_version if proxy else "",
            stream_kind=proxy.stream_kind.value if proxy else "",
        )

    def _on_disconnect(self, event: ProxyEvent) -> None:
        started = self._connected_at.pop(event.node_id, None)
        seconds = round(time.monotonic() - started, 3) if started is not None else None
        self.events.publish(
            EventType.DISCONNECT,
            node_id=event.node_id,
            group=event.group,
            connected_seconds=seconds,
        )
        log.info(
            "proxy disconnected node=%s group=%s after %ss",
            event.node_id,
            event.group,
            seconds,
            extra={"node_id": event.node_id, "group": event.group},
        )

    # -- snapshots and config ---------------------------------------------------------------

    def on_build(self, result: BuildResult) -> None:
        self.metrics.on_build(result)
        state = self.cache.state
        snapshots = {"": state.default, **state.groups}
        resources = sum(len(s) for s in snapshots.values())
        versions = {
            group: {type_label(t): s.version(t) for t in s.type_urls()}
            for group, s in snapshots.items()
        }
        changed = versions != self._last_versions
        self._last_versions = versions
        duration_ms = round(result.duration * 1000, 3)
        self.events.publish(
            EventType.SNAPSHOT,
            generation=result.generation,
            groups=len(state.groups),
            resources=resources,
            duration_ms=duration_ms,
            changed=changed,
            error=result.error,
        )
        if result.error is not None:
            return  # the pipeline logged it
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "snapshot built generation=%d groups=%d resources=%d in %.1f ms%s",
            result.generation,
            len(state.groups),
            resources,
            duration_ms,
            "" if changed else " (no change)",
            extra={
                "generation": result.generation,
                "resources": resources,
                "duration_ms": duration_ms,
            },
        )

    def on_revision(self, revision: int, documents: int, error: str | None = None) -> None:
        """A config revision reached the pipeline (``error``: it could not be used)."""
        if error is None:
            self.metrics.revisions.inc()
            log.info(
                "config revision %d applied (%d documents)",
                revision,
                documents,
                extra={"revision": revision, "documents": documents},
            )
        self.events.publish(EventType.REVISION, revision=revision, documents=documents, error=error)

    # -- the mesh CA --------------------------------------------------------------------------

    def on_mesh_event(self, kind: str, detail: Mapping[str, Any]) -> None:
        """The mesh CA issued, removed or rotated something (details never hold a key)."""
        type_ = _MESH_EVENTS.get(kind)
        if type_ is None:
            return
        if type_ is EventType.MESH_CA_ERROR:
            log.error("mesh CA: %s", detail.get("error"), extra={"mesh": dict(detail)})
        else:
            log.info("mesh %s", kind, extra={"mesh": dict(detail)})
        self.events.publish(type_, **detail)

    # -- the registry source ----------------------------------------------------------------

    def check_source(self) -> None:
        """Publish the source's transitions since the last look: ready, failing (or failing
        differently), recovered. The source logs them itself; this makes them events."""
        status = self.source_status()
        if status is None:
            return
        seen = self._source_seen
        if status.ready and not seen.ready:
            self.events.publish(EventType.SOURCE_READY, source=self.source_name)
        if status.last_error is not None and status.last_error != seen.error:
            self.events.publish(
                EventType.SOURCE_ERROR,
                source=self.source_name,
                error=status.last_error,
                errors=status.errors,
            )
        elif status.last_error is None and seen.error is not None:
            self.events.publish(
                EventType.SOURCE_RECOVERED,
                source=self.source_name,
                errors=status.errors,
                failed=status.errors - seen.errors_when_healthy,
            )
        if status.last_error is None:
            seen.errors_when_healthy = status.errors
        seen.ready, seen.error = status.ready, status.last_error

    async def watch_source(self, interval: float = SOURCE_POLL_SECONDS) -> None:
        """``check_source`` every ``interval`` seconds until cancelled."""
        while True:
            self.check_source()
            await asyncio.sleep(interval)

    def close(self) -> None:
        self.events.close()
