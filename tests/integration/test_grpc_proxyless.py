"""Proxyless gRPC: real grpcio ``xds:///`` clients resolve registry services through the server.

Three grpcio echo servers (``http_apps.GrpcEcho``: every answer names its server) are the
instances of the static registry's services; each client is its own process
(``grpc_xds_client``: grpcio reads ``GRPC_XDS_BOOTSTRAP`` once per process) with the bootstrap
``xds-server bootstrap --grpc`` prints. What the clients are served is what they hold: the
server's records (``/v1/proxies``, CSDS) must show every one of them ACKing, never NACKing.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.consul_double import ConsulDouble
from tests.integration.http_apps import GrpcEcho
from tests.integration.rest_stack import Api, csds, start_server
from tests.support.consul_stack import consul_server
from tests.support.envoy import free_port, wait_for
from tests.support.process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = [sys.executable, "-m", "xds_server", "bootstrap", "--grpc"]
CLIENT = [sys.executable, "-m", "tests.integration.grpc_xds_client"]
NODE_CLIENT = Path(__file__).with_name("grpc_xds_client.js")
#: The Node.js xDS client, installed once per machine by ``node_packages``.
NODE_PACKAGES = ("@grpc/grpc-js@1.14.7", "@grpc/grpc-js-xds@1.14.1")
_node_ids = itertools.count(1)


def registry(ports: dict[str, int], leaving: tuple[str, ...] = ("a", "b", "c")) -> str:
    """``echo`` (all three), ``echo-X`` (one each), ``routed`` (a, the target of the route),
    ``hashed`` (all three, ring hash), ``leaving`` (those given)."""
    services = {
        "echo": ("a", "b", "c"),
        "echo-a": ("a",),
        "echo-b": ("b",),
        "echo-c": ("c",),
        "routed": ("a",),
        "hashed": ("a", "b", "c"),
        "leaving": leaving,
    }
    lines = ["services:"]
    for name, members in services.items():
        lines += [f"  {name}:", "    endpoints:"]
        lines += [f"      - {{address: 127.0.0.1, port: {ports[m]}}}" for m in members]
    return "\n".join(lines) + "\n"


CONFIG: list[dict[str, Any]] = [
    {
        "kind": "Listener",
        "name": "public",
        "spec": {"address": "127.0.0.1", "port": 1, "access_log": False},
    },
    {
        "kind": "Route",
        "name": "routed",
        "spec": {
            "listeners": ["public"],
            "hostnames": ["routed"],
            "rules": [
                {
                    "matches": [{"headers": [{"name": "x-canary", "exact": "yes"}]}],
                    "backends": [{"service": "echo-c"}],
                },
                {
                    "matches": [{"grpc": {"service": "pkg.Echo", "method": "Flaky"}}],
                    "backends": [{"service": "echo-a"}],
                    "retry": {"retry_on": ["unavailable"], "num_retries": 2},
                },
                {
                    "matches": [{"grpc": {"service": "pkg.Echo", "method": "Slow"}}],
                    "backends": [{"service": "echo-b"}],
                    "timeouts": {"request": "200ms"},
                },
                {
                    "backends": [
                        {"service": "echo-a", "weight": 80},
                        {"service": "echo-b", "weight": 20},
                    ]
                },
            ],
        },
    },
    {
        "kind": "ServicePolicy",
        "name": "hashed",
        "spec": {
            "load_balancing": {"policy": "ring_hash", "hash_policies": [{"header": "x-user"}]}
        },
    },
]


class Stack:
    def __init__(self, server: ServerProcess, workdir: Path, ports: dict[str, int]) -> None:
        self.server = server
        self.workdir = workdir
        self.ports = ports
        self.echoes: dict[str, GrpcEcho] = {}
        #: Every client node id used with this server (``assert_no_nacks`` checks them).
        self.clients: list[str] = []

    def server_json(self, path: str) -> dict[str, Any]:
        response = httpx.get(self.server.admin + path, timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def bootstrap(self) -> tuple[str, dict[str, str]]:
        """A new client node's id and the environment pointing grpcio at its bootstrap."""
        node_id = f"grpc-client-{next(_node_ids)}"
        self.clients.append(node_id)
        document = subprocess.run(
            [*BOOTSTRAP, "--node-id", node_id, "--ads", f"127.0.0.1:{self.server.ads_port}"],
            check=True,
            capture_output=True,
        ).stdout
        path = self.workdir / f"{node_id}.json"
        path.write_bytes(document)
        return node_id, {**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)}

    def calls(
        self, target: str, method: str, count: int, *options: str, node: Path | None = None
    ) -> dict[str, Any]:
        """``count`` calls by a new client: ``{"answers": {...}, "errors": {...}}``; a
        Node.js one (``grpc_xds_client.js``) with ``node``, the packages' folder."""
        _, env = self.bootstrap()
        command = [*CLIENT, target, method, str(count), *options]
        if node is not None:
            command = ["node", str(NODE_CLIENT), target, method, str(count)]
            env["NODE_PATH"] = str(node / "node_modules")
        done = subprocess.run(
            command,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("grpc")
    echoes = {name: GrpcEcho(name, delay=1.0).start() for name in ("a", "b", "c")}
    ports = {name: echo.port for name, echo in echoes.items()}
    (workdir / "registry.yaml").write_text(registry(ports))
    server = start_server(workdir / "registry.yaml", workdir / "store.db")
    api = Api(server.admin)
    try:
        config = [dict(d) for d in CONFIG]
        config[0] = {**config[0], "spec": {**config[0]["spec"], "port": free_port()}}
        api.apply(config)
        result = Stack(server, workdir, ports)
        result.echoes = echoes
        # The route is served once a canary call lands where its rule says (the first client
        # may connect before the translation of the new config is published).
        wait_for(
            lambda: (
                result.calls("xds:///routed", "Say", 3, "--header", "x-canary=yes")["answers"]
                == {"c:Say": 3}
            ),
            30,
            "the route served to gRPC clients",
            interval=0.2,
        )
        yield result
    finally:
        api.close()
        server.terminate()
        for echo in echoes.values():
            echo.stop()


def shares(answers: dict[str, int]) -> dict[str, float]:
    total = sum(answers.values())
    return {name: count / total for name, count in answers.items()}


def test_round_robin_over_the_three_instances(stack: Stack) -> None:
    result = stack.calls("xds:///echo", "Say", 300)
    assert result["errors"] == {}
    assert set(result["answers"]) == {"a:Say", "b:Say", "c:Say"}
    print(f"round robin over 300 calls: {result['answers']}")
    for name, share in shares(result["answers"]).items():
        assert 0.25 <= share <= 0.42, (name, result)


def test_target_with_a_port_resolves(stack: Stack) -> None:
    """``xds:///echo:PORT`` is its own listener, routed as ``echo``."""
    result = stack.calls(f"xds:///echo:{stack.ports['b']}", "Say", 30)
    assert result["errors"] == {}
    assert set(result["answers"]) == {"a:Say", "b:Say", "c:Say"}


def test_weighted_split_80_20(stack: Stack) -> None:
    result = stack.calls("xds:///routed", "Say", 1000)
    assert result["errors"] == {}
    split = shares(result["answers"])
    print(f"80/20 split over 1,000 calls: {result['answers']}")
    assert set(split) == {"a:Say", "b:Say"}
    assert abs(split["a:Say"] - 0.80) <= 0.05, result


def test_header_matched_rule(stack: Stack) -> None:
    result = stack.calls("xds:///routed", "Hello", 50, "--header", "x-canary=yes")
    assert result == {"answers": {"c:Hello": 50}, "errors": {}}
    other = stack.calls("xds:///routed", "Hello", 50, "--header", "x-canary=no")
    assert "c:Hello" not in other["answers"]


def test_retry_on_unavailable(stack: Stack) -> None:
    """``Flaky`` refuses every payload's first attempt: the route's retry makes every call
    succeed; without a route (``echo-a`` directly) the same calls fail."""
    retried = stack.calls("xds:///routed", "Flaky", 20, "--payload-prefix", "retried")
    assert retried == {"answers": {"a:Flaky": 20}, "errors": {}}
    attempts = stack.echoes["a"].flaky_attempts
    assert all(attempts[f"retried-{i}".encode()] == 2 for i in range(20)), attempts
    direct = stack.calls("xds:///echo-a", "Flaky", 20, "--payload-prefix", "direct")
    assert direct == {"answers": {}, "errors": {"UNAVAILABLE": 20}}


def test_timeout_gives_deadline_exceeded(stack: Stack) -> None:
    """A 200 ms route timeout against a 1 s handler; the client's own deadline is 10 s."""
    timed = stack.calls("xds:///routed", "Slow", 2)
    assert timed == {"answers": {}, "errors": {"DEADLINE_EXCEEDED": 2}}
    untimed = stack.calls("xds:///echo-b", "Slow", 1)
    assert untimed == {"answers": {"b:Slow": 1}, "errors": {}}


def test_ring_hash_keeps_a_key_on_one_instance(stack: Stack) -> None:
    servers: set[str] = set()
    for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
        result = stack.calls("xds:///hashed", "Say", 30, "--header", f"x-user={user}")
        assert result["errors"] == {}
        assert len(result["answers"]) == 1, (user, result)  # one key, one instance
        servers.update(result["answers"])
    assert len(servers) >= 2  # and keys do spread (6 keys on 3 instances)


@pytest.fixture(scope="module")
def node_packages() -> Path:
    """``@grpc/grpc-js-xds`` installed with npm into a cache folder (once per machine)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js is not installed (Debian: apt-get install nodejs npm)")
    folder = Path.home() / ".cache" / "xds-server-tests" / "grpc-js-xds"
    if not (folder / "node_modules" / "@grpc" / "grpc-js-xds").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        installed = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(folder), *NODE_PACKAGES],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if installed.returncode != 0:  # no registry reachable: the machine's, not ours
            pytest.skip(f"npm install {' '.join(NODE_PACKAGES)} failed: {installed.stderr[-500:]}")
    return folder


def test_a_node_js_client_round_robins_and_splits(stack: Stack, node_packages: Path) -> None:
    """grpc-js-xds, a second xDS client implementation: the same round robin and split."""
    spread = stack.calls("xds:///echo", "Say", 300, node=node_packages)
    assert spread["errors"] == {}
    assert set(spread["answers"]) == {"a:Say", "b:Say", "c:Say"}
    for name, share in shares(spread["answers"]).items():
        assert 0.25 <= share <= 0.42, (name, spread)
    split = stack.calls("xds:///routed", "Say", 1000, node=node_packages)
    print(f"Node.js: round robin {spread['answers']}, 80/20 split {split['answers']}")
    assert split["errors"] == {} and set(split["answers"]) == {"a:Say", "b:Say"}
    assert abs(shares(split["answers"])["a:Say"] - 0.80) <= 0.05, split


def test_what_grpc_cannot_honour_is_accepted_with_a_warning_and_left_out(stack: Stack) -> None:
    """A redirect rule and a query match on a target: the write is accepted with warnings
    naming them and the client type; the client is sent neither (its calls keep working,
    and the last test finds no NACK)."""
    document = {
        "kind": "Route",
        "name": "unsupported",
        "spec": {
            "listeners": ["public"],
            "hostnames": ["echo-c"],
            "rules": [
                {
                    "matches": [{"path": {"prefix": "/pkg.Echo"}}],
                    "filters": {"redirect": {"path": "/x"}},
                },
                {
                    "matches": [{"query_params": [{"name": "q", "present": True}]}],
                    "backends": [{"service": "echo-a"}],
                },
            ],
        },
    }
    api = Api(stack.server.admin)
    try:
        stored = api.put(document)
        fields = {w["field"]: w["reason"] for w in stored["warnings"]}
        assert "spec.rules[0].filters.redirect" in fields, stored["warnings"]
        assert "spec.rules[1].matches[0].query_params" in fields, stored["warnings"]
        assert all("proxyless gRPC clients" in reason for reason in fields.values())
        # Served once the client holds the route (nothing of it applies: all calls to c).
        result = stack.calls("xds:///echo-c", "Say", 20)
        assert result == {"answers": {"c:Say": 20}, "errors": {}}
    finally:
        api.delete("Route", "unsupported")
        api.close()


class Watcher:
    """A client calling ``target`` until stopped; what it saw, line by line."""

    def __init__(self, stack: Stack, target: str) -> None:
        self.node_id, env = stack.bootstrap()
        self.process = subprocess.Popen(
            [*CLIENT, target, "Say", "0", "--watch", "--timeout", "2"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    def seen(self, since: float = 0.0) -> Counter[str]:
        return Counter(
            str(line.get("answer") or line.get("error"))
            for line in list(self.lines)
            if line["at"] > since
        )

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=20)
        self._reader.join(timeout=5)


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def held_in_csds(stack: Stack, node_id: str) -> dict[str, tuple[str, str]]:
    """What CSDS says the client holds, once all of it is SYNCED (ACKed)."""

    def synced() -> dict[str, tuple[str, str]] | None:
        held = csds(stack.server.ads_port).get(node_id)
        ok = held and all(status == "SYNCED" for _, status in held.values())
        return held if ok else None

    return wait_for(synced, 10, f"{node_id} SYNCED in CSDS")


def assert_leaves(stack: Stack, watcher: Watcher, leave: Callable[[], object]) -> Counter[str]:
    """``leave()`` takes instance ``c`` out: once the server has sent the client its new
    endpoints (and the client ACKed them), calls 1 s later and on reach ``a`` and ``b`` only.
    Returns the calls seen from then on."""
    wait_for(lambda: len(watcher.seen()) == 3, 30, "calls on all three instances")
    proxy = f"/v1/proxies/{watcher.node_id}"
    before = stack.server_json(proxy)["types"]["EDS"]["sent_version"]
    leave()

    def eds_acked() -> dict[str, Any] | None:
        eds: dict[str, Any] = stack.server_json(proxy)["types"]["EDS"]
        changed = eds["sent_version"] != before and eds["acked_version"] == eds["sent_version"]
        return eds if changed else None

    eds = wait_for(eds_acked, 30, "the new endpoints ACKed by the client")
    sent_at = _epoch(eds["sent_at"])
    wait_for(lambda: watcher.seen(since=sent_at + 1.5), 10, "calls after the change")
    after = watcher.seen(since=sent_at + 1.0)
    last_c = max(line["at"] for line in list(watcher.lines) if line.get("answer") == "c:Say")
    print(f"last call on the leaving instance: {last_c - sent_at:+.3f} s after the EDS push")
    assert "c:Say" not in after, after
    assert set(after) == {"a:Say", "b:Say"}, after
    return after


def assert_no_nacks(stack: Stack) -> None:
    """Every client of ``stack``, from the server's own records: recognised by its gRPC
    user agent, everything it was sent ACKed, nothing NACKed."""
    proxies = {p["node_id"]: p for p in stack.server_json("/v1/proxies?limit=1000")["items"]}
    assert stack.clients and set(stack.clients) <= set(proxies)
    for node_id in stack.clients:
        proxy = proxies[node_id]
        assert proxy["envoy_version"], proxy  # its user agent's version
        # Listed with its user agent ("gRPC Python 1.76.0", "grpc-node-js 1.x") and type.
        assert "grpc" in proxy["user_agent"].lower(), proxy
        assert proxy["user_agent"].endswith(proxy["envoy_version"]), proxy
        assert proxy["client_type"] == "grpc", proxy
        assert {"LDS", "RDS", "CDS", "EDS"} <= set(proxy["types"]), proxy
        for kind, status in proxy["types"].items():
            assert status["last_nack"] is None, (node_id, kind, status["last_nack"])
            assert status["acked_version"] == status["sent_version"], (node_id, kind, status)


def test_leaving_instance_gets_no_call_after_one_second(stack: Stack) -> None:
    watcher = Watcher(stack, "xds:///leaving")
    try:
        held = held_in_csds(stack, watcher.node_id)  # CSDS lists the client, ACKed
        assert {"Listener/leaving", "Cluster/leaving", "ClusterLoadAssignment/leaving"} <= set(held)
        # The proxy's config view shows what it holds: the gRPC resources, decoded.
        config = stack.server_json(f"/v1/proxies/{watcher.node_id}/config")
        [listener] = [r for r in config["types"]["LDS"]["resources"] if r["name"] == "leaving"]
        assert "api_listener" in listener["resource"], listener
        registry_file = stack.workdir / "registry.yaml"
        assert_leaves(
            stack, watcher, lambda: registry_file.write_text(registry(stack.ports, ("a", "b")))
        )
    finally:
        watcher.stop()
        (stack.workdir / "registry.yaml").write_text(registry(stack.ports))


def test_no_grpc_client_nacked(stack: Stack) -> None:
    """Every client of this module's static-registry server (run last of its tests)."""
    assert_no_nacks(stack)


@pytest.fixture
def consul_stack(tmp_path: Path) -> Iterator[tuple[Stack, ConsulDouble]]:
    """The same three echo servers as instances of Consul's ``echo`` (the test double)."""
    echoes = {name: GrpcEcho(name).start() for name in ("a", "b", "c")}
    try:
        with ConsulDouble() as consul:
            for name, echo in echoes.items():
                consul.register("echo", "127.0.0.1", echo.port, id=f"echo-{name}", node=name)
            with consul_server(consul, tmp_path / "store.db") as server:
                ports = {name: echo.port for name, echo in echoes.items()}
                yield Stack(server, tmp_path, ports), consul
    finally:
        for echo in echoes.values():
            echo.stop()


def test_consul_services_round_robin_and_a_critical_instance_leaves(
    consul_stack: tuple[Stack, ConsulDouble],
) -> None:
    stack, consul = consul_stack
    result = stack.calls("xds:///echo", "Say", 300)
    assert result["errors"] == {}
    assert set(result["answers"]) == {"a:Say", "b:Say", "c:Say"}
    for name, share in shares(result["answers"]).items():
        assert 0.25 <= share <= 0.42, (name, result)
    watcher = Watcher(stack, "xds:///echo")
    try:
        held_in_csds(stack, watcher.node_id)
        assert_leaves(stack, watcher, lambda: consul.set_check("echo-c", "critical"))
    finally:
        watcher.stop()
    assert_no_nacks(stack)
