"""The control plane's Prometheus metrics, on a registry of the app's own.

Counters and histograms are updated as things happen (proxy events, snapshot builds); gauges
that describe current state (connected proxies, store revision, registry health) are read
from the parts when ``/metrics`` is scraped, so they are never stale and cost nothing
between scrapes. See ``docs/operations.md`` for the list.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import SHORT_NAMES
from xds_server.pipeline import BuildResult
from xds_server.sources.base import SourceStatus
from xds_server.status import ProxyEvent, ProxyEventKind, ProxyRegistry

#: Convergence happens in milliseconds on a healthy network; Istio's buckets start at 0.1 s.
CONVERGENCE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BUILD_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DEFAULT_GROUP: Final = "(default)"


def type_label(type_url: str) -> str:
    return SHORT_NAMES.get(type_url) or type_url.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class MeshFigures:
    """What the mesh CA reports at scrape time."""

    issued_total: int
    rotations_total: int
    identities: int
    #: Seconds until the first identity expires (None: none issued).
    seconds_to_nearest_expiry: float | None


def no_mesh() -> MeshFigures | None:
    """No mesh CA (the default of tests and tools that have none)."""
    return None


@dataclass(frozen=True, slots=True)
class StateReaders:
    """Where the scrape-time gauges read from (plain callables, so tests can fake them)."""

    registry: ProxyRegistry
    cache: SnapshotCache
    source_name: str
    source_status: Callable[[], SourceStatus | None]
    store_revision: Callable[[], int | None]
    mesh: Callable[[], MeshFigures | None] = no_mesh


class _StateCollector(Collector):
    def __init__(self, readers: StateReaders) -> None:
        self.readers = readers

    def collect(self) -> Iterable[Metric]:
        readers = self.readers
        yield _connected_proxies(readers.registry)
        yield from _snapshot_state(readers.cache)
        revision = readers.store_revision()
        if revision is not None:
            yield GaugeMetricFamily(
                "xds_server_store_revision", "The current config revision.", value=revision
            )
        status = readers.source_status()
        if status is not None:
            yield from _registry_state(readers.source_name, status)
        mesh = readers.mesh()
        if mesh is not None:
            yield from _mesh_state(mesh)


def _mesh_state(mesh: MeshFigures) -> Iterable[Metric]:
    yield CounterMetricFamily(
        "xds_server_mesh_certificates_issued",
        "Workload certificates the mesh CA issued since start (first issues and renewals).",
        value=mesh.issued_total,
    )
    yield CounterMetricFamily(
        "xds_server_mesh_root_rotations",
        "Mesh CA root rotations completed since start.",
        value=mesh.rotations_total,
    )
    yield GaugeMetricFamily(
        "xds_server_mesh_identities", "Services holding a workload identity.", value=mesh.identities
    )
    if mesh.seconds_to_nearest_expiry is not None:
        yield GaugeMetricFamily(
            "xds_server_mesh_certificate_expiry_seconds",
            "Seconds until the workload certificate that expires first does.",
            value=mesh.seconds_to_nearest_expiry,
        )


def _connected_proxies(registry: ProxyRegistry) -> Metric:
    connected = GaugeMetricFamily(
        "xds_server_connected_proxies",
        "Connected proxies by proxy group and stream kind.",
        labels=["group", "stream_kind"],
    )
    counts: dict[tuple[str, str], int] = {}
    for proxy in registry.proxies(include_disconnected=False):
        key = (proxy.group, proxy.stream_kind.value)
        counts[key] = counts.get(key, 0) + 1
    for (group, kind), count in sorted(counts.items()):
        connected.add_metric([group, kind], count)
    return connected


def _snapshot_state(cache: SnapshotCache) -> Iterable[Metric]:
    state = cache.state
    yield GaugeMetricFamily(
        "xds_server_snapshot_generation",
        "Generation of the snapshot cache (bumped by every published snapshot set).",
        value=state.generation,
    )
    resources = GaugeMetricFamily(
        "xds_server_snapshot_resources",
        "Resources in the current snapshot by proxy group ('(default)': groups without "
        "a snapshot of their own) and type.",
        labels=["group", "type"],
    )
    for group, snapshot in [(DEFAULT_GROUP, state.default), *sorted(state.groups.items())]:
        for type_url in snapshot.type_urls():
            resources.add_metric([group, type_label(type_url)], len(snapshot.of_type(type_url)))
    yield resources


def _registry_state(name: str, status: SourceStatus) -> Iterable[Metric]:
    errors = CounterMetricFamily(
        "xds_server_registry_watch_errors",
        "Failed requests or loads of the service registry since start.",
        labels=["source"],
    )
    errors.add_metric([name], status.errors)
    yield errors
    yield _source_gauge(
        "xds_server_registry_up",
        "1 while the service registry answers without errors.",
        name,
        0 if status.last_error else 1,
    )
    yield _source_gauge(
        "xds_server_registry_ready",
        "1 once the first complete inventory has been received.",
        name,
        1 if status.ready else 0,
    )
    if status.last_contact is not None:
        yield _source_gauge(
            "xds_server_registry_seconds_since_last_contact",
            "Seconds since the last successful exchange with the service registry.",
            name,
            max(0.0, time.monotonic() - status.last_contact),
        )


def _source_gauge(metric: str, documentation: str, source: str, value: float) -> Metric:
    gauge = GaugeMetricFamily(metric, documentation, labels=["source"])
    gauge.add_metric([source], value)
    return gauge


@dataclass(frozen=True, slots=True)
class _Definition:
    """One updated-as-it-happens metric: the ``ServerMetrics`` attribute that holds it."""

    attribute: str
    name: str
    documentation: str
    labels: tuple[str, ...] = ()
    #: A histogram's buckets; None for a counter.
    buckets: tuple[float, ...] | None = None

    def register(self, registry: CollectorRegistry) -> Counter | Histogram:
        if self.buckets is None:
            return Counter(self.name, self.documentation, self.labels, registry=registry)
        return Histogram(
            self.name, self.documentation, self.labels, buckets=self.buckets, registry=registry
        )


#: In registration order (the order of ``/metrics``).
_DEFINITIONS: Final = (
    _Definition("pushes", "xds_server_xds_pushes", "xDS responses sent, by type.", ("type",)),
    _Definition(
        "pushed_bytes",
        "xds_server_xds_pushed_bytes",
        "Bytes of xDS responses sent, by type.",
        ("type",),
    ),
    _Definition("acks", "xds_server_xds_acks", "ACKs received, by type.", ("type",)),
    _Definition(
        "nacks", "xds_server_xds_nacks", "NACKs received (config rejected), by type.", ("type",)
    ),
    _Definition(
        "convergence",
        "xds_server_proxy_convergence_seconds",
        "From a change entering the snapshot cache to a proxy's ACK of it, by type "
        "(like Istio's pilot_proxy_convergence_time).",
        ("type",),
        buckets=CONVERGENCE_BUCKETS,
    ),
    _Definition(
        "connects",
        "xds_server_proxy_connects",
        "Proxies that connected (first stream of a node), by group.",
        ("group",),
    ),
    _Definition(
        "disconnects",
        "xds_server_proxy_disconnects",
        "Proxies that disconnected (last stream of a node closed), by group.",
        ("group",),
    ),
    _Definition(
        "build_seconds",
        "xds_server_snapshot_build_seconds",
        "Time to translate the config and inventory and publish the snapshots.",
        buckets=BUILD_BUCKETS,
    ),
    _Definition(
        "builds",
        "xds_server_snapshot_builds",
        "Snapshot builds by outcome (ok, or error: the previous snapshot was kept).",
        ("outcome",),
    ),
    _Definition(
        "memory_trims",
        "xds_server_memory_trims",
        "Times memory freed by a burst (dropped streams, replaced snapshots) was handed "
        "back to the OS.",
    ),
    _Definition(
        "memory_trimmed_bytes",
        "xds_server_memory_trimmed_bytes",
        "Resident memory handed back to the OS by those trims.",
    ),
    _Definition(
        "revisions",
        "xds_server_config_revisions_applied",
        "Config revisions handed to the snapshot pipeline.",
    ),
)


class ServerMetrics:
    """Every control-plane metric, registered on ``registry``."""

    # One attribute per entry of ``_DEFINITIONS``.
    pushes: Counter
    pushed_bytes: Counter
    acks: Counter
    nacks: Counter
    convergence: Histogram
    connects: Counter
    disconnects: Counter
    build_seconds: Histogram
    builds: Counter
    memory_trims: Counter
    memory_trimmed_bytes: Counter
    revisions: Counter

    def __init__(self, registry: CollectorRegistry, readers: StateReaders | None = None) -> None:
        self.registry = registry
        for definition in _DEFINITIONS:
            setattr(self, definition.attribute, definition.register(registry))
        self._send_children: dict[str, tuple[Any, Any]] = {}
        self._ack_children: dict[str, tuple[Any, Any]] = {}
        if readers is not None:
            registry.register(_StateCollector(readers))

    def on_proxy_event(self, event: ProxyEvent) -> None:
        kind = event.kind
        if kind == ProxyEventKind.SEND:
            pushes, pushed_bytes = self._by_type(self._send_children, event.type_url)
            pushes.inc()
            pushed_bytes.inc(event.bytes)
        elif kind == ProxyEventKind.ACK:
            acks, convergence = self._by_type(self._ack_children, event.type_url)
            acks.inc()
            if event.convergence is not None:
                convergence.observe(event.convergence)
        elif kind == ProxyEventKind.NACK:
            self.nacks.labels(type_label(event.type_url)).inc()
        elif kind == ProxyEventKind.CONNECT:
            self.connects.labels(event.group).inc()
        elif kind == ProxyEventKind.DISCONNECT:
            self.disconnects.labels(event.group).inc()

    def _by_type(self, children: dict[str, tuple[Any, Any]], type_url: str) -> tuple[Any, Any]:
        """The labelled children for a type, looked up once (pushes and ACKs are per proxy
        and type: the hottest path of the metrics)."""
        found = children.get(type_url)
        if found is None:
            label = type_label(type_url)
            if children is self._send_children:
                found = (self.pushes.labels(label), self.pushed_bytes.labels(label))
            else:
                found = (self.acks.labels(label), self.convergence.labels(label))
            children[type_url] = found
        return found

    def on_memory_trim(self, freed_bytes: int) -> None:
        self.memory_trims.inc()
        self.memory_trimmed_bytes.inc(freed_bytes)

    def on_build(self, result: BuildResult) -> None:
        self.build_seconds.observe(result.duration)
        self.builds.labels("error" if result.error else "ok").inc()
