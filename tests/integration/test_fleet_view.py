"""One fleet across replicas (issue 18, acceptance 4): two ``xds-server serve`` replicas sharing
``--store consul-kv:PREFIX`` on the Consul double, a real Envoy on each.

Each replica publishes its proxies under a Consul session (``PREFIX-fleet/<replica>/…``); a
proxy on B is listed by A within 2 s; once B is killed with SIGKILL its proxies leave A's view
when B's session expires (Consul: between TTL and 2 x TTL after its last renewal). The
double's ``session_ttl_min`` (Consul's server setting) is lowered so that a 2 s TTL is
accepted and the test stays short.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.consul_double import ConsulDouble
from tests.support.envoy import bootstrap, running_envoy, wait_for
from tests.support.process import ServerProcess

pytestmark = pytest.mark.envoy

TTL = 2.0
PREFIX = "xds/config"


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble(jitter=False, session_ttl_min=1.0) as started:
        yield started


def replica(name: str, double: ConsulDouble) -> ServerProcess:
    return ServerProcess(
        "--ads-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "text",
        "--store", f"consul-kv:{PREFIX}", "--fleet-ttl", f"{TTL:g}s", "--replica-id", name,
        env={"CONSUL_HTTP_ADDR": double.url},
    ).start()  # fmt: skip


def proxies(http: httpx.Client, server: ServerProcess) -> dict[str, dict[str, Any]]:
    items = http.get(f"{server.admin}/v1/proxies").json()["items"]
    return {item["node_id"]: item for item in items}


def listing_with(
    http: httpx.Client, server: ServerProcess, node_id: str
) -> dict[str, dict[str, Any]] | None:
    """The server's proxies by node id, once ``node_id`` is among them."""
    listed = proxies(http, server)
    return listed if node_id in listed else None


def status_table(server: ServerProcess) -> list[list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDS_SERVER_")}
    done = subprocess.run(
        [sys.executable, "-m", "xds_server", "status", "--server", server.admin],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines() if line.strip()]


def test_every_replica_lists_the_fleet_and_a_killed_replica_drops_out(
    double: ConsulDouble,
) -> None:
    a = replica("replica-a", double)
    b = replica("replica-b", double)
    try:
        with (
            running_envoy(bootstrap(a.ads_port, node_id="envoy-a", group="ga")),
            running_envoy(bootstrap(b.ads_port, node_id="envoy-b", group="gb")),
            httpx.Client(timeout=10) as http,
        ):
            # B knows its Envoy (live registry); from then on A lists it within 2 s.
            wait_for(lambda: "envoy-b" in proxies(http, b), 30, "envoy-b connected to B")
            started = time.monotonic()
            seen = wait_for(
                lambda: proxies(http, a).get("envoy-b"), 2.0, "envoy-b listed by replica A"
            )
            print(f"A listed B's Envoy {(time.monotonic() - started) * 1000:.0f} ms after B")
            assert seen["replica"] == "replica-b"
            assert seen["group"] == "gb" and seen["connected"] is True
            assert seen["user_agent"].startswith("envoy ") and seen["client_type"] == "envoy"
            assert seen["stream_kind"] == "ads-sotw"
            assert "CDS" in seen["types"] and "LDS" in seen["types"]

            # Each replica lists both, its own from its registry; one proxy by id from either.
            fleet_a = wait_for(lambda: listing_with(http, a, "envoy-a"), 10, "envoy-a on A")
            assert fleet_a["envoy-a"]["replica"] == "replica-a"
            fleet_b = wait_for(lambda: listing_with(http, b, "envoy-a"), 2.0, "envoy-a on B")
            assert {n: p["replica"] for n, p in fleet_b.items()} == {
                "envoy-a": "replica-a",
                "envoy-b": "replica-b",
            }
            one = http.get(f"{a.admin}/v1/proxies/envoy-b")
            assert one.status_code == 200 and one.json()["replica"] == "replica-b"
            assert http.get(f"{a.admin}/v1/proxies/envoy-b/config").status_code == 404
            assert http.get(f"{a.admin}/v1/proxies?group=gb").json()["items"][0]["node_id"] == (
                "envoy-b"
            )

            # ``xds-server status`` on A: a REPLICA column, both proxies.
            table = status_table(a)
            assert table[0][:3] == ["NODE", "GROUP", "REPLICA"], table[0]
            rows = {row[0]: row for row in table[1:]}
            assert rows["envoy-a"][1:3] == ["ga", "replica-a"]
            assert rows["envoy-b"][1:3] == ["gb", "replica-b"]
            # Envoys only: the ENVOY column (their version), no AGENT column.
            assert "AGENT" not in table[0] and rows["envoy-b"][table[0].index("ENVOY")] != "-"

            # Both replicas' summaries are held by their own Consul sessions.
            sessions = {s["Name"]: s for s in double.sessions()}
            assert set(sessions) == {"xds-server fleet replica-a", "xds-server fleet replica-b"}
            assert {s["Behavior"] for s in sessions.values()} == {"delete"}
            held = double.kv_entry(f"{PREFIX}-fleet/replica-b/0000")
            assert held is not None
            assert held["Session"] == sessions["xds-server fleet replica-b"]["ID"]

            # kill -9: no clean shutdown, the session lives on until its TTL runs out.
            b.kill()
            killed = time.monotonic()
            assert "envoy-b" in proxies(http, a), "dropped before B's session expired"
            wait_for(
                lambda: "envoy-b" not in proxies(http, a),
                2 * TTL + 5.0,
                "envoy-b gone from A once B's session expired",
            )
            print(f"B's proxies left A's view {time.monotonic() - killed:.1f} s after kill -9")
            assert set(proxies(http, a)) == {"envoy-a"}
            assert [s["Name"] for s in double.sessions()] == ["xds-server fleet replica-a"]
            assert double.kv_entry(f"{PREFIX}-fleet/replica-b/0000") is None
            assert status_table(a)[0][:3] == ["NODE", "GROUP", "CONNECTED"]
    finally:
        a.kill()
        b.kill()


def test_a_replica_that_stops_cleanly_leaves_the_fleet_at_once(double: ConsulDouble) -> None:
    a = replica("replica-a", double)
    b = replica("replica-b", double)
    try:
        with (
            running_envoy(bootstrap(b.ads_port, node_id="envoy-b", group="gb")),
            httpx.Client(timeout=10) as http,
        ):
            wait_for(lambda: proxies(http, a).get("envoy-b"), 30, "envoy-b listed by A")
            assert b.terminate() == 0  # SIGTERM: B destroys its session, Consul deletes the keys
            wait_for(lambda: "envoy-b" not in proxies(http, a), 2.0, "envoy-b gone from A")
            assert [s["Name"] for s in double.sessions()] == ["xds-server fleet replica-a"]
    finally:
        a.kill()
        b.kill()
