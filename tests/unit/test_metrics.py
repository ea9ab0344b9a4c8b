"""``/metrics``: Prometheus text every parser reads, fed by proxy events, builds and state."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support import resources as r
from tests.unit.admin_harness import running_api
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import CLUSTER, ROUTE
from xds_server.observability.hub import Observability
from xds_server.pipeline import BuildResult
from xds_server.sources.base import SourceStatus
from xds_server.status import ProxyEvent, ProxyEventKind, ProxyRegistry, StreamKind
from xds_server.store import MemoryStore


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: Iterable[Sample], name: str, **labels: str) -> float | None:
    for sample in found:
        if sample.name == name and sample.labels == labels:
            return float(sample.value)
    return None


def observability(status: SourceStatus | None = None) -> Observability:
    registry = ProxyRegistry()
    cache = SnapshotCache()
    return Observability(cache, registry, "static", lambda: status, lambda: 7)


def scrape(hub: Observability) -> list[Sample]:
    from prometheus_client import generate_latest

    return samples(generate_latest(hub.metrics_registry).decode())


def test_proxy_events_become_counters_and_the_convergence_histogram() -> None:
    hub = observability()
    hub.registry.connect("a", "edge", "ipv4:127.0.0.1:1", "1.40.0", StreamKind.ADS_SOTW)
    hub.registry.connect("b", "edge", "ipv4:127.0.0.1:2", "1.40.0", StreamKind.ADS_DELTA)
    hub.registry.connect("c", "mesh", "ipv4:127.0.0.1:3", "1.40.0", StreamKind.ADS_SOTW)
    for event in (
        ProxyEvent(ProxyEventKind.SEND, "a", "edge", CLUSTER, "v1", bytes=100),
        ProxyEvent(ProxyEventKind.SEND, "b", "edge", CLUSTER, "v1", bytes=50),
        ProxyEvent(ProxyEventKind.ACK, "a", "edge", CLUSTER, "v1", convergence=0.003),
        ProxyEvent(ProxyEventKind.ACK, "b", "edge", CLUSTER, "v1", convergence=0.2),
        ProxyEvent(
            ProxyEventKind.ACK, "b", "edge", CLUSTER, "v1"
        ),  # a repeated ACK: no convergence
        ProxyEvent(ProxyEventKind.NACK, "c", "mesh", ROUTE, "v2", "bad route"),
    ):
        hub.registry.emit(event)
    found = scrape(hub)
    assert value(found, "xds_server_xds_pushes_total", type="CDS") == 2
    assert value(found, "xds_server_xds_pushed_bytes_total", type="CDS") == 150
    assert value(found, "xds_server_xds_acks_total", type="CDS") == 3
    assert value(found, "xds_server_xds_nacks_total", type="RDS") == 1
    histogram = "xds_server_proxy_convergence_seconds"
    assert value(found, histogram + "_count", type="CDS") == 2
    assert value(found, histogram + "_bucket", type="CDS", le="0.005") == 1
    assert value(found, histogram + "_bucket", type="CDS", le="0.25") == 2
    assert value(found, "xds_server_proxy_connects_total", group="edge") == 2
    connected = "xds_server_connected_proxies"
    assert value(found, connected, group="edge", stream_kind="ads-sotw") == 1
    assert value(found, connected, group="edge", stream_kind="ads-delta") == 1
    assert value(found, connected, group="mesh", stream_kind="ads-sotw") == 1
    events = hub.events.after(0)
    assert [e.type for e in events] == ["connect"] * 3 + ["ack"] * 3 + ["nack"]
    assert events[3].data["convergence_ms"] == 3.0
    assert events[-1].data == {
        "node_id": "c",
        "group": "mesh",
        "resource_type": "RDS",
        "version": "v2",
        "message": "bad route",
    }


def test_builds_revisions_registry_and_store_state() -> None:
    status = SourceStatus(
        ready=True, last_error="consul: 500", last_contact=time.monotonic() - 5, errors=4
    )
    hub = observability(status)
    hub.cache.set_snapshots(Snapshot.build([r.cluster("web"), r.endpoints("web", 1)]))
    hub.on_build(BuildResult(0.004, 1))
    hub.on_build(BuildResult(0.002, 1, error="inconsistent"))
    hub.on_revision(3, 2)
    found = scrape(hub)
    assert value(found, "xds_server_snapshot_build_seconds_count") == 2
    assert value(found, "xds_server_snapshot_builds_total", outcome="ok") == 1
    assert value(found, "xds_server_snapshot_builds_total", outcome="error") == 1
    assert value(found, "xds_server_snapshot_generation") == 1
    assert value(found, "xds_server_snapshot_resources", group="(default)", type="CDS") == 1
    assert value(found, "xds_server_config_revisions_applied_total") == 1
    assert value(found, "xds_server_store_revision") == 7
    assert value(found, "xds_server_registry_watch_errors_total", source="static") == 4
    assert value(found, "xds_server_registry_up", source="static") == 0
    assert value(found, "xds_server_registry_ready", source="static") == 1
    since = value(found, "xds_server_registry_seconds_since_last_contact", source="static")
    assert since is not None and 5 <= since < 60
    snapshot_events = [e for e in hub.events.after(0) if e.type == "snapshot"]
    assert snapshot_events[0].data["resources"] == 2 and snapshot_events[0].data["changed"]
    assert snapshot_events[1].data["error"] == "inconsistent"


def test_source_transitions_become_events() -> None:
    sequence = [
        SourceStatus(),
        SourceStatus(ready=True, last_contact=1.0),
        SourceStatus(ready=True, last_error="consul: 500", errors=1),
        SourceStatus(ready=True, last_error="consul: 500", errors=3),  # the same: nothing new
        SourceStatus(ready=True, last_error="consul: ACL not found", errors=4),
        SourceStatus(ready=True, errors=4),
        SourceStatus(ready=True, errors=4),
    ]
    current: list[SourceStatus] = []
    hub = Observability(SnapshotCache(), ProxyRegistry(), "consul", lambda: current[-1], lambda: 0)
    for status in sequence:
        current.append(status)
        hub.check_source()
    events = [(e.type, dict(e.data)) for e in hub.events.after(0)]
    assert events == [
        ("source_ready", {"source": "consul"}),
        ("source_error", {"source": "consul", "error": "consul: 500", "errors": 1}),
        ("source_error", {"source": "consul", "error": "consul: ACL not found", "errors": 4}),
        ("source_recovered", {"source": "consul", "errors": 4, "failed": 4}),
    ]


def test_every_app_has_its_own_registry() -> None:
    one, two = observability(), observability()
    one.metrics.nacks.labels("CDS").inc()
    assert value(scrape(two), "xds_server_xds_nacks_total", type="CDS") is None
    assert value(scrape(one), "xds_server_xds_nacks_total", type="CDS") == 1
    assert isinstance(one.metrics_registry, CollectorRegistry)
    assert one.metrics_registry is not two.metrics_registry


async def test_admin_requests_are_counted_by_route_template() -> None:
    registry = CollectorRegistry()
    async with running_api(MemoryStore(), metrics=registry) as api:
        assert (await api.client.get("/v1/routes/nope")).status_code == 404
        assert (await api.client.get("/v1/routes/other")).status_code == 404
        assert (await api.client.get("/no/such/path")).status_code == 404
        assert (await api.client.delete("/healthz")).status_code == 405
        answer = await api.client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = samples(answer.text)
    requests = "xds_server_admin_requests_total"
    assert value(found, requests, method="GET", route="/v1/routes/{name}", status="404") == 2
    assert value(found, requests, method="GET", route="unmatched", status="404") == 1
    assert value(found, requests, method="DELETE", route="/healthz", status="405") == 1
    duration = "xds_server_admin_request_duration_seconds_count"
    assert value(found, duration, method="GET", route="/v1/routes/{name}") == 2


async def test_a_scrape_counts_the_scrape_before_it() -> None:
    async with running_api(MemoryStore()) as api:
        first = await api.client.get("/metrics")
        second = await api.client.get("/metrics")
    assert first.status_code == second.status_code == 200
    requests = "xds_server_admin_requests_total"
    assert (
        value(samples(first.text), requests, method="GET", route="/metrics", status="200") is None
    )
    assert value(samples(second.text), requests, method="GET", route="/metrics", status="200") == 1


def test_the_mesh_ca_figures_are_read_at_scrape_time() -> None:
    from xds_server.observability.metrics import MeshFigures

    figures: list[MeshFigures | None] = [None]
    hub = Observability(
        SnapshotCache(), ProxyRegistry(), "static", lambda: None, lambda: 1, lambda: figures[0]
    )
    assert not [s for s in scrape(hub) if s.name.startswith("xds_server_mesh_")]  # no mesh yet
    figures[0] = MeshFigures(
        issued_total=5, rotations_total=1, identities=2, seconds_to_nearest_expiry=42.5
    )
    found = scrape(hub)
    assert value(found, "xds_server_mesh_certificates_issued_total") == 5
    assert value(found, "xds_server_mesh_root_rotations_total") == 1
    assert value(found, "xds_server_mesh_identities") == 2
    assert value(found, "xds_server_mesh_certificate_expiry_seconds") == 42.5


def test_mesh_ca_events_reach_the_event_stream() -> None:
    hub = observability()
    hub.on_mesh_event("identity_issued", {"service": "api", "serial": "0a"})
    hub.on_mesh_event("ca_rotation", {"step": "trust"})
    hub.on_mesh_event("something_unknown", {})
    published = [(e.type, e.data) for e in hub.events.after(0)]
    assert published == [
        ("mesh_identity_issued", {"service": "api", "serial": "0a"}),
        ("mesh_ca_rotation", {"step": "trust"}),
    ]
