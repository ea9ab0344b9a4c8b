"""``kill -9`` of the server loses no acknowledged write, and Envoy sees no spurious change.

A thread streams REST writes (routes and retry policies) while the server is killed with
SIGKILL; the server restarts on the same store and ports. Every write that was answered
2xx must be there, with the revision it was answered with, and Envoy (connected all along,
reconnecting by itself) must converge on the recovered config. A second ``kill -9`` with no
write in between must hand Envoy exactly the versions it already holds: versions are
content hashes, so the same config gives the same versions in any process, and Envoy
reloads nothing.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.rest_stack import (
    KIND_PATHS,
    Api,
    Traffic,
    converge,
    dynamic_configs,
    envoy_config,
    envoy_resource_versions,
    listener,
    registry_yaml,
    route,
    start_server,
    synced_versions,
    to,
)
from tests.support.envoy import Envoy, free_ports, running_envoy, wait_for
from tests.support.process import ServerProcess
from tests.support.upstream import upstreams

pytestmark = pytest.mark.envoy

NODE = "envoy-durable"
#: Acknowledged writes to wait for before the kill.
WRITES_BEFORE_KILL = 40
#: Envoy counters that move only when a config's content changes.
RELOAD_STATS = (
    "cluster_manager.cluster_modified",
    "listener_manager.listener_modified",
    "http.public.rds.public.config_reload",
)
#: Envoy counters that move whenever a config is received and accepted.
RECEIVED_STATS = (
    "cluster_manager.cds.update_success",
    "listener_manager.lds.update_success",
    "http.public.rds.public.update_success",
)


@dataclass
class Write:
    kind: str
    name: str
    spec: dict[str, Any]
    revision: int


@dataclass
class Writer:
    """PUTs a route, then a retry policy, then a route … until a request goes unanswered."""

    admin: str
    acked: list[Write] = field(default_factory=list)
    unanswered: list[tuple[str, str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def document(self, index: int) -> dict[str, Any]:
        if index % 2 == 0:
            return route(f"w-{index}", [f"w-{index}.test"], [{"backends": to("web")}])
        spec = {"retry_on": ["5xx", "reset"], "num_retries": 1 + index % 5}
        return {"kind": "RetryPolicy", "name": f"p-{index}", "spec": spec}

    def _run(self) -> None:
        with httpx.Client(base_url=self.admin, timeout=10) as http:
            for index in range(10_000):
                if self.stop.is_set():
                    return
                document = self.document(index)
                path = f"/v1/{KIND_PATHS[document['kind']]}/{document['name']}"
                try:
                    answer = http.put(path, json=document)
                except httpx.TransportError as error:
                    self.unanswered.append((document["kind"], document["name"], repr(error)))
                    return
                if not answer.is_success:
                    self.refused.append(f"{path}: {answer.status_code} {answer.text}")
                    return
                body = answer.json()
                self.acked.append(Write(body["kind"], body["name"], body["spec"], body["revision"]))


def route_domains(envoy: Envoy) -> set[str]:
    """Every domain of the listener's route configuration in Envoy."""
    for entry in dynamic_configs(envoy, "RoutesConfigDump"):
        config = entry["route_config"]
        if config["name"] == "public":
            return {d for vhost in config.get("virtual_hosts", []) for d in vhost["domains"]}
    return set()


def sigkill(server: ServerProcess) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    assert server.process.wait(10) == -signal.SIGKILL


def test_acknowledged_writes_survive_kill_9_and_envoy_gets_the_same_versions(
    tmp_path: Path,
) -> None:
    ads_port, admin_port, port = free_ports(3)
    store, registry = tmp_path / "store.db", tmp_path / "registry.yaml"
    servers: list[ServerProcess] = []

    def serve() -> ServerProcess:
        # The same ports every time: Envoy reconnects to its bootstrap's ADS address.
        server = start_server(registry, store, ads_port=ads_port, admin_port=admin_port)
        servers.append(server)
        return server

    with upstreams("web-1") as (web,):
        registry.write_text(registry_yaml({"web": [web]}))
        try:
            first = serve()
            api = Api(first.admin)
            with running_envoy(envoy_config(ads_port, NODE)) as envoy:
                traffic = Traffic(port)
                try:
                    api.put(listener("public", port))
                    api.put(route("base", ["base.test"], [{"backends": to("web")}]))
                    converge(
                        "first config -> Envoy", lambda: traffic.body("base.test") == "web-1", envoy
                    )
                    before = envoy_resource_versions(envoy)

                    # 1. kill -9 in the middle of a stream of writes.
                    writer = Writer(first.admin)
                    started = time.monotonic()
                    writer.thread.start()
                    try:
                        wait_for(
                            lambda: len(writer.acked) >= WRITES_BEFORE_KILL or writer.refused,
                            30,
                            f"{WRITES_BEFORE_KILL} acknowledged writes",
                        )
                        writing = time.monotonic() - started
                        sigkill(first)
                    finally:
                        writer.stop.set()
                        writer.thread.join(15)
                    assert writer.refused == []
                    assert len(writer.unanswered) == 1, "the kill did not cut the stream"
                    last_acked = max(write.revision for write in writer.acked)
                    print(
                        f"kill -9 after {len(writer.acked)} acknowledged writes (last revision "
                        f"{last_acked}, {len(writer.acked) / writing:.0f} writes/s); in flight: "
                        f"{writer.unanswered[0][:2]}"
                    )
                    # Envoy keeps serving its last config while the control plane is gone.
                    assert traffic.body("base.test") == "web-1"
                    held_before_kill = envoy_resource_versions(envoy)
                    domains_before_kill = route_domains(envoy)

                    started = time.monotonic()
                    second = serve()
                    print(f"restart took {time.monotonic() - started:.2f} s")
                    api.close()
                    api = Api(second.admin)  # not a connection of the dead server
                    recovered = api.revision()
                    # Only the one unanswered write may have been committed on top.
                    assert recovered in (last_acked, last_acked + 1)
                    routes = {w.name for w in writer.acked if w.kind == "Route"} | {"base"}
                    if recovered > last_acked and writer.unanswered[0][0] == "Route":
                        routes.add(writer.unanswered[0][1])
                    expected_domains = {f"{name}.test" for name in routes}
                    converge(
                        "restart -> Envoy holds the recovered config",
                        lambda: (
                            route_domains(envoy) == expected_domains
                            and synced_versions(second.ads_port, NODE) is not None
                        ),
                        envoy,
                    )
                    for write in writer.acked:
                        stored = api.get(write.kind, write.name)
                        assert (stored["spec"], stored["revision"]) == (write.spec, write.revision)
                    print(f"restart: revision {recovered}, all {len(writer.acked)} writes there")
                    for name in sorted(routes):
                        assert traffic.body(f"{name}.test") == "web-1"
                    after = envoy_resource_versions(envoy)
                    # The writes touched only routes: the listener and clusters kept their
                    # versions across the crash; the route configuration's version changed
                    # exactly when its content did (whether the dead server had pushed the
                    # last writes or not).
                    assert {k: v for k, v in after.items() if not k.startswith("route/")} == {
                        k: v for k, v in before.items() if not k.startswith("route/")
                    }
                    same_routes = domains_before_kill == expected_domains
                    print(
                        "Envoy's routes before the kill "
                        + ("were already the recovered ones" if same_routes else "lagged")
                    )
                    assert (
                        held_before_kill["route/public"] == after["route/public"]
                    ) == same_routes

                    # 2. kill -9 with nothing written since: Envoy gets the same versions.
                    versions = synced_versions(second.ads_port, NODE)
                    assert versions is not None
                    stats = {name: envoy.stat(name) for name in RELOAD_STATS}
                    received = {name: envoy.stat(name) for name in RECEIVED_STATS}
                    sigkill(second)
                    third = serve()

                    def resynced() -> dict[str, str] | None:
                        found = synced_versions(third.ads_port, NODE)
                        return found if found is not None and set(found) == set(versions) else None

                    converge("second restart -> Envoy re-synced", resynced, envoy)
                    print(f"per-resource versions after the restart: {resynced()}")
                    assert resynced() == versions
                    assert envoy_resource_versions(envoy) == after
                    # Envoy was sent every resource again, accepted it, and changed nothing.
                    assert all(envoy.stat(name) > count for name, count in received.items())
                    assert {name: envoy.stat(name) for name in RELOAD_STATS} == stats
                    assert stats["http.public.rds.public.config_reload"] > 0  # the stat is real
                finally:
                    traffic.close()
                    api.close()
        finally:
            for server in servers:
                server.kill()
