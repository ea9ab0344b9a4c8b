"""The mesh tests' harness works: test hosts (network namespaces) with their own ports, the
applications in them, real Envoys in them reaching the control plane in the root namespace,
a sidecar's bootstrap that Envoy accepts, and nothing left behind, even after a failure."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.envoy_static import envoy_validate
from tests.support import netns
from tests.support.envoy import Envoy, wait_for
from tests.support.mesh_apps import MeshApp, tcp_echo_call
from tests.support.process import ServerProcess
from tests.support.sample import call_json

#: Fixed ports: every host has its own port space, so the same port serves each instance.
APP_PORT = 8080
ECHO_PORT = 9000


def ours() -> list[str]:
    """This test run's namespaces that still exist."""
    mine = f"{netns.NAMESPACE_PREFIX}{os.getpid()}-"
    return [name for name in netns.namespaces() if name.startswith(mine)]


def links() -> set[str]:
    done = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(": ")[1].split("@")[0] for line in done.stdout.splitlines()}


def test_two_hosts_have_their_own_ports_and_reach_each_other_and_the_root() -> None:
    with netns.hosts(2) as (one, two):
        assert one.root_address == two.root_address
        assert len({one.address, two.address, one.root_address}) == 3
        assert set(ours()) == {one.name, two.name}
        with (
            MeshApp.http("api-1", one, port=APP_PORT) as api_1,
            MeshApp.http("api-2", two, port=APP_PORT) as api_2,  # the same port: no collision
            MeshApp.tcp_echo("echo", two, port=ECHO_PORT),
            MeshApp.http("local", one, address="127.0.0.1", port=APP_PORT + 1),
        ):
            # From the root namespace to each host.
            for app in (api_1, api_2):
                answer = app.get("/hello", headers={"x-probe": "root"})
                assert answer["status"] == 200
                seen = json.loads(answer["body"])
                assert seen["instance"] == app.name and seen["path"] == "/hello"
                assert seen["headers"]["x-probe"] == "root"
            assert tcp_echo_call(two.address, ECHO_PORT, "from root") == {
                "reply": "from root",
                "closed": False,
            }
            # From one host to the other, by the application itself.
            answer = api_1.call_http(api_2.url("/from-one"), method="POST", body="hi")
            seen = json.loads(answer["body"])
            assert (seen["instance"], seen["method"], seen["body"]) == ("api-2", "POST", "hi")
            assert api_1.call_tcp(two.address, ECHO_PORT, "from one")["reply"] == "from one"
            # 127.0.0.1 is each host's own: host one's local app, unseen from host two.
            local = f"http://127.0.0.1:{APP_PORT + 1}/"
            assert json.loads(api_1.call_http(local)["body"])["instance"] == "local"
            refused = api_2.call_http(local, timeout=2)
            assert refused["status"] == 0 and "refused" in refused["error"].lower()
            # Nowhere else: a host has no route off its network.
            assert api_1.call_http("http://10.213.255.254/", timeout=1)["status"] == 0
    assert ours() == []
    assert not {one.veth, two.veth, one.network.bridge} & links()


def test_teardown_after_a_failure_stops_every_process_and_removes_the_hosts() -> None:
    started: list[int] = []
    with pytest.raises(RuntimeError, match="the test failed"), netns.hosts(2) as (one, two):
        tracked = one.popen(["sleep", "600"])
        # Started around the harness (not through ``popen``): still found and stopped.
        untracked = subprocess.Popen([*two.exec_prefix, "sleep", "600"])
        started = [tracked.pid, untracked.pid]
        wait_for(lambda: set(netns._pids(two.name)) == {untracked.pid}, 10, "the sleep in two")
        raise RuntimeError("the test failed")
    assert untracked.wait(10) is not None
    for pid in started:
        assert not Path(f"/proc/{pid}").exists()
    assert ours() == []
    assert not {one.veth, two.veth, one.network.bridge} & links()


def test_stale_hosts_of_a_killed_run_are_removed() -> None:
    netns.require()
    # A run that died (kill -9) left a namespace behind; the pid in its name is gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"{netns.NAMESPACE_PREFIX}{dead.pid}-250-1"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        with netns.hosts(1):
            assert stale not in netns.namespaces()
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)


# -- sidecars: a bootstrap Envoy accepts; Envoys in hosts reach ADS in the root namespace -------


def sidecar_bootstrap(*argv: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "xds_server", "bootstrap", "--sidecar", "api", *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    document: dict[str, Any] = yaml.safe_load(done.stdout)
    return document


@pytest.mark.envoy
@pytest.mark.parametrize("argv", [[], ["--delta", "--ca", "/etc/ssl/certs/ca-certificates.crt"]])
def test_the_sidecar_bootstrap_passes_envoy_validate(tmp_path: Path, argv: list[str]) -> None:
    checked = envoy_validate(sidecar_bootstrap("--node-id", "api-1", *argv), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def ads_connected(envoy: Envoy) -> bool:
    return envoy.stat("control_plane.connected_state") == 1


@pytest.fixture
def two_hosts() -> Iterator[list[netns.TestHost]]:
    with netns.hosts(2) as found:
        yield found


@pytest.mark.envoy
def test_sidecars_in_hosts_reach_the_control_plane_in_the_root(
    tmp_path: Path, two_hosts: list[netns.TestHost]
) -> None:
    root = two_hosts[0].root_address
    server = ServerProcess(
        "--ads-listen",
        f"{root}:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--registry",
        "static:",
        "--store",
        f"sqlite:{tmp_path / 'store.db'}",
    )
    server.start()
    envoys: list[Envoy] = []
    try:
        for index, host in enumerate(two_hosts, 1):
            # The same admin port in both hosts, on the host's address so the test can read it.
            envoys.append(host.sidecar("api", f"api-{index}", server.ads_port).start())
        for index, envoy in enumerate(envoys, 1):
            assert envoy.admin == f"{two_hosts[index - 1].address}:{netns.SIDECAR_ADMIN_PORT}"
            assert json.loads(envoy.get("/server_info"))["node"]["id"] == f"api-{index}"
            wait_for(
                functools.partial(ads_connected, envoy),
                30,
                "the sidecar's ADS stream",
                envoy.check_alive,
            )

        def connected() -> dict[str, dict[str, Any]] | None:
            status, answer = call_json(server.admin + "/v1/proxies?connected=true")
            found = {item["node_id"]: item for item in answer["items"]} if status == 200 else {}
            return found if {"api-1", "api-2"} <= found.keys() else None

        proxies = wait_for(connected, 30, "both sidecars in /v1/proxies")
        for index, host in enumerate(two_hosts, 1):
            proxy = proxies[f"api-{index}"]
            assert proxy["group"] == "api"
            assert host.address in proxy["peer"]  # it came from its own host
    finally:
        for envoy in envoys:
            envoy.stop()
        server.kill()
    assert all(envoy.process is not None and envoy.process.poll() is not None for envoy in envoys)
