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
from xds_server.cache.status import ProxyEvent, ProxyRegistry
from xds_server.cache.types import SHORT_NAMES
from xds_server.pipeline import BuildResult
from xds_server.sources.base import SourceStatus

#: Convergence happens in milliseconds on a healthy network; Istio's buckets start at 0.1 s.
CONVERGENCE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BUILD_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DEFAULT_GROUP: Final = "(default)"


def type_label(type_url: str) -> str:
    return SHORT_NAMES.get(type_url) or type_url.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class StateReaders:
    """Where the scrape-time gauges read from (plain callables, so tests can fake them)."""

    registry: ProxyRegistry
    cache: SnapshotCache
    source_name: str
    source_status: Callable[[], SourceStatus | None]
    store_revision: Callable[[], int | None]


class _StateCollector(Collector):
    def __init__(self, readers: StateReaders) -> None:
        self.readers = readers

    def collect(self) -> Iterable[Metric]:
        readers = self.readers
        connected = GaugeMetricFamily(
            "xds_server_connected_proxies",
            "Connected proxies by proxy group and stream kind.",
            labels=["group", "stream_kind"],
        )
        counts: dict[tuple[str, str], int] = {}
        for proxy in readers.registry.proxies(include_disconnected=False):
            key = (proxy.group, proxy.stream_kind.value)
            counts[key] = counts.get(key, 0) + 1
        for (group, kind), count in sorted(counts.items()):
            connected.add_metric([group, kind], count)
        yield connected

        state = readers.cache.state
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

        revision = readers.store_revision()
        if revision is not None:
            yield GaugeMetricFamily(
                "xds_server_store_revision", "The current config revision.", value=revision
            )

        status = readers.source_status()
        if status is not None:
            name = readers.source_name
            errors = CounterMetricFamily(
                "xds_server_registry_watch_errors",
                "Failed requests or loads of the service registry since start.",
                labels=["source"],
            )
            errors.add_metric([name], status.errors)
            yield errors
            up = GaugeMetricFamily(
                "xds_server_registry_up",
                "1 while the service registry answers without errors.",
                labels=["source"],
            )
            up.add_metric([name], 0 if status.last_error else 1)
            yield up
            ready = GaugeMetricFamily(
                "xds_server_registry_ready",
                "1 once the first complete inventory has been received.",
                labels=["source"],
            )
            ready.add_metric([name], 1 if status.ready else 0)
            yield ready
            if status.last_contact is not None:
                since = GaugeMetricFamily(
                    "xds_server_registry_seconds_since_last_contact",
                    "Seconds since the last successful exchange with the service registry.",
                    labels=["source"],
                )
                since.add_metric([name], max(0.0, time.monotonic() - status.last_contact))
                yield since


class ServerMetrics:
    """Every control-plane metric, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, readers: StateReaders | None = None) -> None:
        self.registry = registry
        self.pushes = Counter(
            "xds_server_xds_pushes",
            "xDS responses sent, by type.",
            ["type"],
            registry=registry,
        )
        self.pushed_bytes = Counter(
            "xds_server_xds_pushed_bytes",
            "Bytes of xDS responses sent, by type.",
            ["type"],
            registry=registry,
        )
        self.acks = Counter(
            "xds_server_xds_acks", "ACKs received, by type.", ["type"], registry=registry
        )
        self.nacks = Counter(
            "xds_server_xds_nacks",
            "NACKs received (config rejected), by type.",
            ["type"],
            registry=registry,
        )
        self.convergence = Histogram(
            "xds_server_proxy_convergence_seconds",
            "From a change entering the snapshot cache to a proxy's ACK of it, by type "
            "(like Istio's pilot_proxy_convergence_time).",
            ["type"],
            buckets=CONVERGENCE_BUCKETS,
            registry=registry,
        )
        self.connects = Counter(
            "xds_server_proxy_connects",
            "Proxies that connected (first stream of a node), by group.",
            ["group"],
            registry=registry,
        )
        self.disconnects = Counter(
            "xds_server_proxy_disconnects",
            "Proxies that disconnected (last stream of a node closed), by group.",
            ["group"],
            registry=registry,
        )
        self.build_seconds = Histogram(
            "xds_server_snapshot_build_seconds",
            "Time to translate the config and inventory and publish the snapshots.",
            buckets=BUILD_BUCKETS,
            registry=registry,
        )
        self.builds = Counter(
            "xds_server_snapshot_builds",
            "Snapshot builds by outcome (ok, or error: the previous snapshot was kept).",
            ["outcome"],
            registry=registry,
        )
        self.memory_trims = Counter(
            "xds_server_memory_trims",
            "Times memory freed by a burst (dropped streams, replaced snapshots) was handed "
            "back to the OS.",
            registry=registry,
        )
        self.memory_trimmed_bytes = Counter(
            "xds_server_memory_trimmed_bytes",
            "Resident memory handed back to the OS by those trims.",
            registry=registry,
        )
        self.revisions = Counter(
            "xds_server_config_revisions_applied",
            "Config revisions handed to the snapshot pipeline.",
            registry=registry,
        )
        self._send_children: dict[str, tuple[Any, Any]] = {}
        self._ack_children: dict[str, tuple[Any, Any]] = {}
        if readers is not None:
            registry.register(_StateCollector(readers))

    def on_proxy_event(self, event: ProxyEvent) -> None:
        kind = event.kind
        if kind == "send":
            pushes, pushed_bytes = self._by_type(self._send_children, event.type_url)
            pushes.inc()
            pushed_bytes.inc(event.bytes)
        elif kind == "ack":
            acks, convergence = self._by_type(self._ack_children, event.type_url)
            acks.inc()
            if event.convergence is not None:
                convergence.observe(event.convergence)
        elif kind == "nack":
            self.nacks.labels(type_label(event.type_url)).inc()
        elif kind == "connect":
            self.connects.labels(event.group).inc()
        elif kind == "disconnect":
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
