"""Consul (the test double) → xds-server → a real Envoy: instances, health and outages.

The server runs as a subprocess exactly as an operator starts it (``--registry consul`` with
``CONSUL_HTTP_ADDR``); the listener and routes are put in its store before it starts. Every
delay is measured and printed, and asserted only loosely.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.consul_double import ConsulDouble
from tests.support import seed
from tests.support.consul_stack import consul_envoy
from tests.support.envoy import Envoy, free_port, http_get, wait_for
from tests.support.process import ServerProcess
from tests.support.upstream import Upstream, upstreams

pytestmark = pytest.mark.envoy


@dataclass
class Stack:
    consul: ConsulDouble
    server: ServerProcess
    envoy: Envoy
    port: int
    backends: list[Upstream]


def cluster_hosts(envoy: Envoy, cluster: str) -> dict[str, str]:
    """address:port -> health flags, from Envoy's /clusters."""
    hosts: dict[str, str] = {}
    for line in envoy.get("/clusters").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
            hosts[parts[1]] = parts[3]
    return hosts


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    seed.seed_store(
        tmp_path / "store.db",
        [
            seed.listener("public", port),
            seed.route("web", "public", "web"),
            seed.route("later", "public", "later", hostname="later.local"),
        ],
    )
    with ConsulDouble() as consul, upstreams("web-1", "web-2", "web-3", "later-1") as backends:
        for backend in backends[:2]:
            consul.register("web", "127.0.0.1", backend.port, id=backend.name, node=backend.name)
        with consul_envoy(
            consul, tmp_path / "store.db", lambda: http_get(port)[0] == 200, "traffic through Envoy"
        ) as (server, envoy):
            yield Stack(consul, server, envoy, port, backends)


def measure(what: str, probe: Callable[[], object], stack: Stack, timeout: float = 10.0) -> float:
    started = time.monotonic()
    wait_for(probe, timeout, what, stack.envoy.check_alive)
    delay = time.monotonic() - started
    print(f"{what}: {delay * 1000:.0f} ms")
    return delay


class Traffic:
    """Requests through Envoy in a background thread, counting failures."""

    def __init__(self, port: int, host: str = "localhost") -> None:
        self.port, self.host = port, host
        self.ok = 0
        self.failed: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body, _ = http_get(self.port, host=self.host)
            if status == 200:
                self.ok += 1
            else:
                self.failed.append((status, body))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_instances_health_and_deregistration_reach_envoy(stack: Stack) -> None:
    web1, web2 = stack.backends[0], stack.backends[1]
    seen = {http_get(stack.port)[1] for _ in range(40)}
    assert seen == {"web-1", "web-2"}  # load-balanced over both instances

    with Traffic(stack.port) as traffic:
        stack.consul.set_check(web2.name, "critical")
        delay = measure(
            "critical check -> Envoy marks the host unhealthy",
            lambda: (
                "failed_eds_health"
                in cluster_hosts(stack.envoy, "web").get(f"127.0.0.1:{web2.port}", "")
            ),
            stack,
        )
        assert delay <= 5
        before = len(web2.requests)
        answers = {http_get(stack.port)[1] for _ in range(30)}
        assert answers == {"web-1"}
        assert len(web2.requests) == before  # no request reached the critical instance
    assert traffic.ok > 0 and traffic.failed == []

    stack.consul.deregister(web2.name)
    delay = measure(
        "deregistration -> host gone from Envoy",
        lambda: f"127.0.0.1:{web2.port}" not in cluster_hosts(stack.envoy, "web"),
        stack,
    )
    assert delay <= 5
    assert f"127.0.0.1:{web1.port}" in cluster_hosts(stack.envoy, "web")


def test_route_to_a_service_that_appears_later(stack: Stack) -> None:
    status, _, _ = http_get(stack.port, host="later.local")
    assert status == 503  # the cluster exists but has no endpoints yet
    later = stack.backends[3]
    stack.consul.register("later", "127.0.0.1", later.port, id="later-1", node="later-node")
    delay = measure(
        "registration -> a route to a new service serves",
        lambda: http_get(stack.port, host="later.local")[:2] == (200, "later-1"),
        stack,
    )
    assert delay <= 5


@pytest.mark.parametrize("fault", ["errors", "hang", "refused", "index-reset"])
def test_consul_faults_keep_envoy_serving_and_recovery_is_quick(stack: Stack, fault: str) -> None:
    consul = stack.consul
    with Traffic(stack.port) as traffic:
        consul.reset_stats()
        if fault == "errors":
            consul.fail(500)
        elif fault == "hang":
            consul.hang()
        elif fault == "refused":
            consul.refuse_connections()
        else:
            consul.reset_index(1)
        # A change elsewhere wakes the watcher's parked blocking queries, so its next
        # requests meet the fault.
        consul.register("noise", "127.0.0.1", 9, id="noise-1", node="noise")
        if fault == "refused":
            # Refused connections leave no trace in the double: hold the outage for a while
            # (the scenario itself, not a synchronisation) while the watcher retries.
            threading.Event().wait(2.0)
        else:
            consul.wait_for_requests("/v1/", 3, timeout=10)  # the watcher met the fault
        hosts = cluster_hosts(stack.envoy, "web")
        assert len(hosts) == 2 and all("failed" not in flags for flags in hosts.values())
        consul.heal()
    assert traffic.ok > 0 and traffic.failed == []

    web3 = stack.backends[2]
    consul.register("web", "127.0.0.1", web3.port, id="web-3", node="web-3")
    delay = measure(
        f"after {fault}: a new instance reaches Envoy",
        lambda: f"127.0.0.1:{web3.port}" in cluster_hosts(stack.envoy, "web"),
        stack,
    )
    assert delay <= 5
