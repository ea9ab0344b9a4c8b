"""Fault runs against ``xds-server serve`` subprocesses, each counted and printed.

(a) ``kill -9`` of one of two replicas on one Consul (the double) in the middle of writes;
(b) Consul down (refused connections, then 500s) while an Envoy serves through a replica;
(c) the SQLite store's disk full (a real 4 MiB tmpfs);
(d) reconnect storms: the server killed and restarted under a SotW and a delta Envoy.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.consul_double import ConsulDouble
from tests.integration.rest_stack import (
    Api,
    Traffic,
    converge,
    envoy_config,
    listener,
    registry_yaml,
    route,
    start_server,
    synced_versions,
    to,
)
from tests.support.envoy import (
    ROOT,
    Envoy,
    bootstrap,
    free_port,
    free_ports,
    running_envoy,
    wait_for,
)
from tests.support.process import ServerProcess
from tests.support.upstream import upstreams

pytestmark = pytest.mark.envoy

PREFIX = "xds/faults"
PROBLEM_JSON = "application/problem+json"
#: Envoy counters that move only when a config's content changes.
RELOAD_STATS = ("cluster_manager.cluster_modified", "listener_manager.listener_modified")


def replica(
    double: ConsulDouble, registry: Path, *, ads_port: int = 0, admin_port: int = 0
) -> ServerProcess:
    return ServerProcess(
        "--ads-listen", f"127.0.0.1:{ads_port}", "--admin-listen", f"127.0.0.1:{admin_port}",
        "--registry", f"static:{registry}", "--store", f"consul-kv:{PREFIX}",
        "--log-format", "text", "--log-level", "warning",
        env={"CONSUL_HTTP_ADDR": double.url},
    ).start()  # fmt: skip


def sigkill(server: ServerProcess) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    assert server.process.wait(10) == -signal.SIGKILL


def doc(index: int, prefix: str = "w") -> dict[str, Any]:
    return route(f"{prefix}-{index}", [f"{prefix}-{index}.test"], [{"backends": to("web")}])


@dataclass
class Acked:
    name: str
    spec: dict[str, Any]
    revision: int
    server: str


class Load:
    """Requests through Envoy in a thread, as fast as they are answered; counts failures."""

    def __init__(self, port: int, host: str, expect: str) -> None:
        self.traffic = Traffic(port)
        self.host, self.expect = host, expect
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                body = self.traffic.body(self.host)
            except httpx.HTTPError as error:
                body = repr(error)
            if body == self.expect:
                self.ok += 1
            else:
                self.failed.append(body[:200])
            self._stop.wait(0.005)  # pacing: leave CPU to the servers under test

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
        self.traffic.close()


# -- (a) kill -9 of a replica during writes ---------------------------------------------------


@dataclass
class SwitchingWriter:
    """PUTs routes to A until A stops answering, then to B, until ``after_kill`` more are
    acknowledged by B."""

    a: str
    b: str
    after_kill: int
    acked: list[Acked] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def on(self, server: str) -> int:
        return sum(1 for write in self.acked if write.server == server)

    def _run(self) -> None:
        target = self.a
        with httpx.Client(timeout=10) as http:
            for index in range(10_000):
                if self.on(self.b) >= self.after_kill:
                    return
                document = doc(index)
                try:
                    answer = http.put(f"{target}/v1/routes/{document['name']}", json=document)
                except httpx.TransportError as error:
                    if target == self.b:
                        self.refused.append(f"B: {error!r}")
                        return
                    self.unanswered.append(document["name"])
                    target = self.b
                    continue
                if not answer.is_success:
                    self.refused.append(f"{answer.status_code} {answer.text}")
                    return
                body = answer.json()
                self.acked.append(Acked(body["name"], body["spec"], body["revision"], target))


def test_kill_9_of_a_replica_during_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text("services: {}\n")
    with ConsulDouble(jitter=False) as double:
        a, b = replica(double, registry), replica(double, registry)
        try:
            httpx.put(
                f"{a.admin}/v1/listeners/public", json=listener("public", free_port()), timeout=10
            ).raise_for_status()
            writer = SwitchingWriter(a.admin, b.admin, after_kill=30)
            writer.thread.start()
            wait_for(lambda: writer.on(a.admin) >= 40 or writer.refused, 60, "40 writes on A")
            sigkill(a)
            writer.thread.join(60)
            assert not writer.thread.is_alive()
            assert writer.refused == []
            on_a, on_b = writer.on(a.admin), writer.on(b.admin)
            print(
                f"kill -9 of A after {on_a} acknowledged writes; {len(writer.unanswered)} in "
                f"flight ({writer.unanswered}); then {on_b} acknowledged by B"
            )
            assert on_b == 30 and len(writer.unanswered) <= 1
            revisions = [write.revision for write in writer.acked]
            assert revisions == sorted(set(revisions))  # each its own revision, in order
            with httpx.Client(base_url=b.admin, timeout=10) as http:
                lost = []
                for write in writer.acked:
                    got = http.get(f"/v1/routes/{write.name}")
                    if got.status_code != 200 or got.json()["spec"] != write.spec:
                        lost.append(write.name)
                present = len(writer.acked) - len(lost)
                print(f"B holds {present} of {len(writer.acked)} acknowledged writes")
                assert lost == []
        finally:
            a.kill()
            b.kill()


# -- (b) Consul down while Envoy serves through a replica -----------------------------------

#: The issue's 30 s: 15 s of refused connections, then 15 s of 500s.
OUTAGE_REFUSED_S = 15.0
OUTAGE_500_S = 15.0


def test_consul_down_envoy_keeps_serving_and_writes_503(tmp_path: Path) -> None:
    port = free_port()
    registry = tmp_path / "registry.yaml"
    with upstreams("web-1") as (web,), ConsulDouble(jitter=False) as double:
        registry.write_text(registry_yaml({"web": [web]}))
        server = replica(double, registry)
        api = Api(server.admin)
        try:
            with running_envoy(envoy_config(server.ads_port, "envoy-consul")) as envoy:
                api.put(listener("public", port))
                acked = [api.put(route("base", ["base.test"], [{"backends": to("web")}]))]
                traffic = Traffic(port)
                converge("Envoy serves", lambda: traffic.body("base.test") == "web-1", envoy)
                traffic.close()
                refused: list[str] = []  # names of the writes made during the outage
                problems: list[str] = []
                answers: dict[int, int] = {}
                with Load(port, "base.test", "web-1") as load, httpx.Client(timeout=30) as http:

                    def write_during(seconds: float, start: int) -> int:
                        """PUT a route every 0.25 s for ``seconds``: all must be 503."""
                        index = start
                        deadline = time.monotonic() + seconds
                        while time.monotonic() < deadline:
                            document = doc(index, "out")
                            answer = http.put(
                                f"{server.admin}/v1/routes/{document['name']}", json=document
                            )
                            answers[answer.status_code] = answers.get(answer.status_code, 0) + 1
                            if answer.status_code != 503:
                                problems.append(f"{answer.status_code} {answer.text}")
                            elif answer.headers["content-type"] != PROBLEM_JSON:
                                problems.append(f"503 as {answer.headers['content-type']}")
                            refused.append(document["name"])
                            index += 1
                            time.sleep(0.25)  # pacing of the writes, not a synchronisation
                        return index

                    started = time.monotonic()
                    double.refuse_connections()
                    next_index = write_during(OUTAGE_REFUSED_S, 0)
                    double.accept_connections()
                    double.fail(500)
                    write_during(OUTAGE_500_S, next_index)
                    double.heal()
                    outage = time.monotonic() - started
                    failed_during_outage = len(load.failed)
                    ok_during_outage = load.ok
                    # After recovery the first write may meet a backed-off replica: poll.
                    recovered_after = time.monotonic()

                    def first_write_after() -> bool:
                        answer = http.put(f"{server.admin}/v1/routes/back-0", json=doc(0, "back"))
                        return answer.is_success

                    wait_for(first_write_after, 20, "a write after Consul is back")
                    recovered = time.monotonic() - recovered_after
                    acked.append(api.get("Route", "back-0"))
                    for index in range(1, 10):
                        acked.append(api.put(doc(index, "back")))
                    converge(
                        "a write after the outage reaches Envoy",
                        lambda: Traffic(port).body("back-9.test") == "web-1",
                        envoy,
                    )
                print(
                    f"Consul down {outage:.1f} s: {ok_during_outage} "
                    f"requests through Envoy, {failed_during_outage} failed; writes answered "
                    f"{answers}; first write after recovery succeeded {recovered:.2f} s after "
                    f"heal; totals: {load.ok} requests, {len(load.failed)} failed"
                )
                assert problems == []
                assert load.failed == []
                assert answers.get(503, 0) >= 10
                lost = [
                    d["name"] for d in acked if api.get("Route", d["name"])["spec"] != d["spec"]
                ]
                assert lost == []
                for name in refused:  # nothing of a refused write was written
                    assert api.http.get(f"/v1/routes/{name}").status_code == 404
                print(f"{len(acked)} acknowledged writes, 0 lost; {len(refused)} refused")
        finally:
            api.close()
            server.kill()


# -- (c) SQLite disk full --------------------------------------------------------------------


@contextmanager
def small_filesystem(where: Path, size: str = "4m") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (root only), unmounted after."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def fill(directory: Path) -> int:
    """Write files until the filesystem is full (64 KiB writes, then 4 KiB); bytes written."""
    written = 0
    for name, size in (("filler", 65536), ("filler-2", 4096)):
        with (directory / name).open("wb", buffering=0) as out:
            while True:
                try:
                    written += out.write(b"\0" * size)
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error
                    break
    return written


def big_route(index: int) -> dict[str, Any]:
    hostnames = [f"h{n:03d}-{index:04d}-{'x' * 40}.test" for n in range(60)]
    return route(f"big-{index}", hostnames, [{"backends": to("web")}])


def test_sqlite_disk_full_answers_503_and_keeps_the_previous_state(tmp_path: Path) -> None:
    port = free_port()
    registry = tmp_path / "registry.yaml"
    with small_filesystem(tmp_path / "fs") as fs, upstreams("web-1") as (web,):
        registry.write_text(registry_yaml({"web": [web]}))
        server = start_server(registry, fs / "store.db")
        api = Api(server.admin)
        try:
            with running_envoy(envoy_config(server.ads_port, "envoy-disk")) as envoy:
                api.put(listener("public", port))
                acked = [api.put(route("base", ["base.test"], [{"backends": to("web")}]))]
                traffic = Traffic(port)
                converge("Envoy serves", lambda: traffic.body("base.test") == "web-1", envoy)
                traffic.close()
                with Load(port, "base.test", "web-1") as load:
                    filled = fill(fs)
                    statvfs = os.statvfs(fs)
                    refused: httpx.Response | None = None
                    attempts = 0
                    for index in range(300):
                        attempts += 1
                        answer = api.http.put(f"/v1/routes/big-{index}", json=big_route(index))
                        if not answer.is_success:
                            refused = answer
                            break
                        acked.append(answer.json())
                    assert refused is not None, f"{attempts} writes on a full disk all succeeded"
                    print(
                        f"disk filled with {filled / 1024:.0f} KiB (free blocks "
                        f"{statvfs.f_bfree}); {attempts - 1} writes still fit in the store's "
                        f"free pages, then: {refused.status_code} {refused.json().get('detail')}"
                    )
                    assert refused.status_code == 503, refused.text
                    assert refused.headers["content-type"] == PROBLEM_JSON
                    reason = wait_for(
                        lambda: [line for line in server.output if "disk full" in line],
                        10,
                        "the reason in the server log",
                    )
                    print(f"server log: {reason[0].strip()[:200]}")
                    revision = api.revision()
                    assert revision == acked[-1]["revision"]
                    for document in acked:
                        stored = api.get("Route", document["name"])
                        assert (stored["spec"], stored["revision"]) == (
                            document["spec"],
                            document["revision"],
                        )
                    assert api.http.get(f"/v1/routes/big-{attempts - 1}").status_code == 404
                    # Space again: writes succeed, and reach Envoy.
                    (fs / "filler").unlink()
                    (fs / "filler-2").unlink()
                    api.put(route("after", ["after.test"], [{"backends": to("web")}]))
                    converge(
                        "a write after the disk has space again reaches Envoy",
                        lambda: Traffic(port).body("after.test") == "web-1",
                        envoy,
                    )
                print(
                    f"disk full: {len(acked)} acknowledged writes intact at revision "
                    f"{revision}; {load.ok} requests through Envoy, {len(load.failed)} failed"
                )
                assert load.failed == []
                assert server.process is not None and server.process.poll() is None
        finally:
            api.close()
            server.kill()


# -- (d) reconnect storms --------------------------------------------------------------------

RESTARTS = 4
DELTA_NODE = "envoy-delta"
SOTW_NODE = "envoy-sotw"


def delta_config(ads_port: int) -> dict[str, Any]:
    """``envoy/bootstrap-delta.yaml`` for group ``delta``, retrying ADS quickly."""
    config = bootstrap(
        ads_port,
        api_type="DELTA_GRPC",
        node_id=DELTA_NODE,
        group="delta",
        source=ROOT / "envoy" / "bootstrap-delta.yaml",
    )
    for service in config["dynamic_resources"]["ads_config"]["grpc_services"]:
        service["envoy_grpc"]["retry_policy"] = {
            "retry_back_off": {"base_interval": "0.1s", "max_interval": "0.5s"}
        }
    return config


def proxy(admin: str, node_id: str) -> dict[str, Any] | None:
    items = httpx.get(f"{admin}/v1/proxies?connected=true", timeout=5).json()["items"]
    found = [item for item in items if item["node_id"] == node_id]
    return dict(found[0]) if found else None


def delta_stats(envoy: Envoy) -> dict[str, int]:
    names = (
        *RELOAD_STATS,
        "cluster_manager.cds.update_success",
        "listener_manager.lds.update_success",
        "http.edge.rds.edge.update_success",
        "http.edge.rds.edge.config_reload",
    )
    return {name: envoy.stat(name) for name in names}


def test_reconnect_storms_reapply_nothing(tmp_path: Path) -> None:
    ads_port, admin_port, port, edge_port = free_ports(4)
    store, registry = tmp_path / "store.db", tmp_path / "registry.yaml"
    servers: list[ServerProcess] = []

    def serve() -> ServerProcess:
        server = start_server(registry, store, ads_port=ads_port, admin_port=admin_port)
        servers.append(server)
        return server

    with upstreams("web-1") as (web,):
        registry.write_text(registry_yaml({"web": [web]}))
        try:
            server = serve()
            api = Api(server.admin)
            api.put(
                {
                    "kind": "Listener",
                    "name": "public",
                    "spec": {"address": "127.0.0.1", "port": port, "groups": ["default"]},
                }
            )
            api.put(
                {
                    "kind": "Listener",
                    "name": "edge",
                    "spec": {"address": "127.0.0.1", "port": edge_port, "groups": ["delta"]},
                }
            )
            api.put(route("base", ["base.test"], [{"backends": to("web")}]))
            api.put(route("edge", ["edge.test"], [{"backends": to("web")}], listener="edge"))
            api.close()
            with (
                running_envoy(envoy_config(ads_port, SOTW_NODE)) as sotw,
                running_envoy(delta_config(ads_port)) as delta,
            ):
                for envoy, at, host in ((sotw, port, "base.test"), (delta, edge_port, "edge.test")):
                    converge(
                        f"{host} through Envoy",
                        lambda at=at, host=host: Traffic(at).body(host) == "web-1",  # type: ignore[misc]
                        envoy,
                    )
                wait_for(lambda: synced_versions(ads_port, SOTW_NODE), 15, "SotW Envoy synced")
                wait_for(lambda: synced_versions(ads_port, DELTA_NODE), 15, "delta Envoy synced")
                for envoy in (sotw, delta):
                    for name in RELOAD_STATS:  # the counters exist (stat() reads 0 otherwise)
                        assert f"{name}: " in envoy.get(f"/stats?filter=^{name}$")
                sotw_reloads = {name: sotw.stat(name) for name in RELOAD_STATS}
                sotw_received = sotw.stat("cluster_manager.cds.update_success")
                delta_before = delta_stats(delta)
                with (
                    Load(port, "base.test", "web-1") as sotw_load,
                    Load(edge_port, "edge.test", "web-1") as delta_load,
                ):
                    for restart in range(RESTARTS):
                        sigkill(server)
                        started = time.monotonic()
                        server = serve()
                        versions = wait_for(
                            lambda: synced_versions(ads_port, SOTW_NODE),
                            20,
                            "the SotW Envoy back in sync",
                        )
                        delta_back = wait_for(
                            functools.partial(proxy, server.admin, DELTA_NODE),
                            20,
                            "the delta Envoy reconnected",
                        )
                        back = time.monotonic() - started
                        # Hold for a second: the delta Envoy is sent nothing at all, not even
                        # an empty response, and the server counts it in sync.
                        deadline = time.monotonic() + 1.0
                        while time.monotonic() < deadline:
                            seen = proxy(server.admin, DELTA_NODE)
                            assert seen is not None
                            sent = {
                                kind: (status["responses"], status["bytes_sent"])
                                for kind, status in seen["types"].items()
                                if status["responses"]
                            }
                            assert sent == {}, sent
                            time.sleep(0.1)  # polling interval of a hold check
                        assert seen is not None and seen["status"] == "SYNCED", seen
                        print(
                            f"restart {restart + 1}: both Envoys back in {back:.2f} s; SotW "
                            f"re-synced {len(versions)} resources; delta Envoy sent "
                            f"{sent or 'nothing'} (streams={delta_back['streams']})"
                        )
                print(
                    f"{RESTARTS} restarts: SotW {sotw_load.ok} requests, "
                    f"{len(sotw_load.failed)} failed; delta {delta_load.ok} requests, "
                    f"{len(delta_load.failed)} failed"
                )
                assert sotw_load.failed == [] and delta_load.failed == []
                assert sotw_load.ok > 0 and delta_load.ok > 0
                reloads_after = {name: sotw.stat(name) for name in RELOAD_STATS}
                delta_after = delta_stats(delta)
                print(f"SotW Envoy reloads {sotw_reloads} -> {reloads_after}")
                print(f"delta Envoy {delta_before} -> {delta_after}")
                assert reloads_after == sotw_reloads
                # ... though the SotW Envoy was re-sent and accepted everything each time.
                assert sotw.stat("cluster_manager.cds.update_success") >= sotw_received + RESTARTS
                # Nothing re-applied by the delta Envoy: not one update of any type received.
                assert delta_after == delta_before
                # The pushed-bytes metric of the last process: nothing went to anyone new
                # beyond the SotW Envoy's re-sync.
                metrics = httpx.get(f"{server.admin}/metrics", timeout=5).text
                pushed = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith("xds_server_xds_pushed_bytes_total")
                ]
                print("last process: " + "; ".join(pushed))
        finally:
            for started_server in servers:
                started_server.kill()
