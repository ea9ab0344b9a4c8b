"""What the server reports about a real Envoy: ``/v1/proxies``, CSDS, ``/metrics``, events.

The whole control plane runs in process (``XdsServerApp`` on a thread) so that the test can
do what no API allows: publish a snapshot Envoy must reject. Envoy is started from
``envoy/bootstrap.yaml``; a second test starts one from what ``xds-server bootstrap``
prints.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from envoy.service.status.v3 import csds_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.support import seed
from tests.support.app_thread import ThreadedApp, running_app
from tests.support.envoy import Envoy, bootstrap, free_port, http_get, running_envoy, wait_for
from tests.support.process import ServerProcess
from tests.support.sse import open_events
from tests.support.upstream import Upstream, upstreams
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.types import CLUSTER, SHORT_NAMES

pytestmark = pytest.mark.envoy

TYPES = ("CDS", "EDS", "LDS", "RDS")
CSDS_FETCH = "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus"
CSDS_STATUS = {
    csds_pb2.SYNCED: "SYNCED",
    csds_pb2.STALE: "STALE",
    csds_pb2.NOT_SENT: "NOT_SENT",
    csds_pb2.ERROR: "NACKED",
}


def proxy(admin: str, node_id: str) -> dict[str, Any] | None:
    answer = httpx.get(f"{admin}/v1/proxies/{node_id}", timeout=5)
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    found: dict[str, Any] = answer.json()
    return found


def listed(admin: str) -> dict[str, dict[str, Any]]:
    items = httpx.get(f"{admin}/v1/proxies", timeout=5).json()["items"]
    return {item["node_id"]: item for item in items}


def synced(admin: str, node_id: str, **expected_versions: str) -> dict[str, Any] | None:
    """The proxy once every type is SYNCED (and, per type, at the given sent version)."""
    found = proxy(admin, node_id)
    if found is None or set(found["types"]) != set(TYPES):
        return None
    for name, status in found["types"].items():
        if status["status"] != "SYNCED" or status["acked_version"] != status["sent_version"]:
            return None
        if name in expected_versions and status["sent_version"] == expected_versions[name]:
            return None  # still the old version
    return found


def csds(ads_port: int) -> dict[str, dict[str, dict[str, Any]]]:
    """CSDS Fetch: node id -> type -> {statuses, versions, errors} over its resources."""
    with grpc.insecure_channel(f"127.0.0.1:{ads_port}") as channel:
        fetch = channel.unary_unary(
            CSDS_FETCH,
            request_serializer=csds_pb2.ClientStatusRequest.SerializeToString,
            response_deserializer=csds_pb2.ClientStatusResponse.FromString,
        )
        answer = fetch(csds_pb2.ClientStatusRequest(), timeout=5)
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for config in answer.config:
        for entry in config.generic_xds_configs:
            kind = found.setdefault(config.node.id, {}).setdefault(
                SHORT_NAMES[entry.type_url], {"statuses": set(), "names": set(), "errors": set()}
            )
            kind["statuses"].add(CSDS_STATUS[entry.config_status])
            kind["names"].add(entry.name)
            if entry.HasField("error_state"):
                kind["errors"].add(entry.error_state.details)
    return found


def assert_csds_agrees(server: ThreadedApp, node_id: str) -> None:
    """CSDS reports, per type, exactly the status and resource count of /v1/proxies."""
    mine = proxy(server.admin, node_id)
    assert mine is not None
    theirs = csds(server.ads_port)[node_id]
    assert set(theirs) == {t for t, s in mine["types"].items() if s["resources"] > 0}
    for kind, entry in theirs.items():
        status = mine["types"][kind]
        assert entry["statuses"] == {status["status"]}, (kind, entry, status)
        assert len(entry["names"]) == status["resources"]
        nack = status["last_nack"]
        if status["status"] == "NACKED":
            assert entry["errors"] == {nack["message"]}


def metric(admin: str, name: str, **labels: str) -> float:
    """One sample's value from /metrics (0 when the sample does not exist yet)."""
    text = httpx.get(f"{admin}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def poisoned(server: ThreadedApp, group: str) -> Snapshot:
    """The group's current snapshot with every cluster's connect_timeout set to 0 (Envoy's
    validation requires > 0); everything else unchanged, so only CDS is rejected."""
    current = server.app.cache.snapshot_for(group)
    messages = []
    for type_url, by_name in current.messages.items():
        for message in by_name.values():
            copy = type(message)()
            copy.CopyFrom(message)
            if type_url == CLUSTER:
                copy.ClearField("connect_timeout")
                copy.connect_timeout.SetInParent()
            messages.append(copy)
    return Snapshot.build(messages)


@pytest.fixture
def backend() -> Iterator[Upstream]:
    with upstreams("one") as (one,):
        yield one


def _files(tmp_path: Path, backend: Upstream, port: int) -> tuple[Path, Path]:
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        f"services:\n  web:\n    endpoints:\n      - {{address: 127.0.0.1, port: {backend.port}}}\n"
    )
    store = tmp_path / "store.db"
    seed.seed_store(store, [seed.listener("public", port), seed.route("web", "public", "web")])
    return registry, store


def test_a_real_envoy_is_synced_then_nacked_as_proxies_csds_metrics_and_events_say(
    tmp_path: Path, backend: Upstream
) -> None:
    port = free_port()
    registry, store = _files(tmp_path, backend, port)
    with (
        running_app(registry, store) as server,
        running_envoy(bootstrap(server.ads_port, node_id="edge-1", group="edge")) as envoy,
    ):
        admin = server.admin
        first = wait_for(lambda: synced(admin, "edge-1"), 20, "edge-1 SYNCED", envoy.check_alive)
        assert first["group"] == "edge" and first["connected"] is True
        assert first["stream_kind"] == "ads-sotw"
        assert first["envoy_version"].startswith("1.40.")
        assert first["peer"].startswith("ipv4:127.0.0.1:")
        assert first["disconnected_at"] is None and first["status"] == "SYNCED"
        # What the server says Envoy ACKed is what Envoy says it has.
        assert envoy.versions()["clusters"] == first["types"]["CDS"]["acked_version"]
        assert envoy.versions()["listeners"] == first["types"]["LDS"]["acked_version"]
        assert listed(admin)["edge-1"] == first
        assert_csds_agrees(server, "edge-1")

        config = httpx.get(f"{admin}/v1/proxies/edge-1/config", timeout=5).json()
        listeners = config["types"]["LDS"]["resources"]
        assert [r["name"] for r in listeners] == ["public"]
        address = listeners[0]["resource"]["address"]["socket_address"]
        assert address["port_value"] == port
        clusters = {r["name"] for r in config["types"]["CDS"]["resources"]}
        assert clusters == {
            c["cluster"]["name"]
            for c in _dump(envoy, "ClustersConfigDump", "dynamic_active_clusters")
        }
        assert all(r["resource"] is not None for r in config["types"]["CDS"]["resources"])
        assert http_get(port)[1] == "one"

        # A change: the convergence histogram gets an observation for it.
        rds_before = metric(admin, "xds_server_proxy_convergence_seconds_count", type="RDS")
        with open_events(admin, types="revision,snapshot,ack") as events:
            answer = httpx.put(
                f"{admin}/v1/routes/web",
                json=seed.route("web", "public", "web", hostname="shop.example.com"),
                timeout=5,
            )
            assert answer.status_code == 200, answer.text
            revision = answer.json()["revision"]
            seen = events.until(lambda f: f.event == "ack" and f.data["resource_type"] == "RDS")
        kinds = [f.event for f in seen]
        assert kinds.index("revision") < kinds.index("snapshot") < kinds.index("ack")
        assert seen[kinds.index("revision")].data["revision"] == revision
        ids = [f.id or 0 for f in seen]
        assert ids == sorted(ids) and len(set(ids)) == len(ids) and 0 not in ids
        after = wait_for(
            lambda: synced(admin, "edge-1", RDS=first["types"]["RDS"]["sent_version"]),
            20,
            "the change ACKed",
            envoy.check_alive,
        )
        assert after["types"]["CDS"]["sent_version"] == first["types"]["CDS"]["sent_version"]
        rds_after = metric(admin, "xds_server_proxy_convergence_seconds_count", type="RDS")
        assert rds_after > rds_before
        assert_csds_agrees(server, "edge-1")

        # A snapshot Envoy rejects: NACKED with Envoy's message, counted, and an event.
        nacks_before = metric(admin, "xds_server_xds_nacks_total", type="CDS")
        with open_events(admin, types="nack") as events:
            server.call(server.app.cache.set_snapshots, poisoned(server, "edge"), check=False)
            nack = events.next_frame().data
        assert nack["node_id"] == "edge-1" and nack["resource_type"] == "CDS"

        def nacked() -> dict[str, Any] | None:
            found = proxy(admin, "edge-1")
            return found if found and found["types"]["CDS"]["status"] == "NACKED" else None

        rejected = wait_for(nacked, 20, "the NACK", envoy.check_alive)
        message = rejected["types"]["CDS"]["last_nack"]["message"]
        print(f"Envoy's NACK: {message}")
        assert "connect_timeout" in message.lower() or "ConnectTimeout" in message
        assert nack["message"] == message
        assert rejected["status"] == "NACKED"
        assert {rejected["types"][t]["status"] for t in ("EDS", "LDS", "RDS")} == {"SYNCED"}
        assert metric(admin, "xds_server_xds_nacks_total", type="CDS") > nacks_before
        assert_csds_agrees(server, "edge-1")
        assert http_get(port, host="shop.example.com")[1] == "one"  # the last good config

        # Gone, but still listed for a while.
        envoy.stop()

        def disconnected() -> dict[str, Any] | None:
            found = proxy(admin, "edge-1")
            return found if found is not None and not found["connected"] else None

        gone = wait_for(disconnected, 20, "the disconnect")
        assert gone["disconnected_at"] is not None
        assert "edge-1" not in {
            p["node_id"] for p in httpx.get(f"{admin}/v1/proxies?connected=true").json()["items"]
        }
        assert metric(admin, "xds_server_connected_proxies", group="edge") == 0


def _dump(envoy: Envoy, kind: str, key: str) -> list[dict[str, Any]]:
    for config in envoy.config_dump()["configs"]:
        if config["@type"].endswith(kind):
            found: list[dict[str, Any]] = config.get(key, [])
            return found
    return []


def test_the_printed_bootstrap_starts_an_envoy_that_syncs(
    tmp_path: Path, backend: Upstream
) -> None:
    port = free_port()
    registry, store = _files(tmp_path, backend, port)
    server = ServerProcess(
        "--ads-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--registry",
        f"static:{registry}",
        "--store",
        f"sqlite:{store}",
    ).start()
    try:
        printed = subprocess.run(
            [
                sys.executable,
                "-m",
                "xds_server",
                "bootstrap",
                "--node-id",
                "cli-1",
                "--group",
                "edge",
                "--ads",
                f"127.0.0.1:{server.ads_port}",
                "--admin",
                "127.0.0.1:0",
                "--delta",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        config = yaml.safe_load(printed.stdout)
        with running_envoy(config) as envoy:
            found = wait_for(
                lambda: synced(server.admin, "cli-1"), 20, "cli-1 SYNCED", envoy.check_alive
            )
            assert found["stream_kind"] == "ads-delta" and found["group"] == "edge"
            wait_for(lambda: http_get(port)[1] == "one", 20, "traffic", envoy.check_alive)
    finally:
        server.kill()
