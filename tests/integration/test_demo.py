"""``make demo`` end to end: ``demo/run.py`` with the real xds-server, Envoy and samples.

Every port is a free one passed through the DEMO_* variables (never the defaults), and the
scratch folder is the test's own, so the demo can run next to other tests and a real demo.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.envoy import free_ports
from tests.support.sample import call, call_json, read_line

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "demo" / "run.py"
READY = re.compile(r"^Ctrl-C stops everything\.$")
#: The one-line proxyless gRPC call the demo prints (run verbatim by the test).
GRPC_CALL = re.compile(r"^\s*(GRPC_XDS_BOOTSTRAP=.+ call xds:///greeter)$")
START_TIMEOUT = 120.0

pytestmark = pytest.mark.envoy


@dataclass
class DemoRun:
    process: subprocess.Popen[str]
    workdir: Path
    ports: dict[str, int]
    #: The gRPC call line as printed (once the demo is ready).
    grpc_call: str = ""

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.workdir / "state.json").read_text()))

    def envoy(self, path: str = "/") -> tuple[int, str]:
        status, body, _ = call(f"http://127.0.0.1:{self.ports['DEMO_ENVOY_PORT']}{path}")
        return status, body

    def logs(self) -> str:
        found = sorted(self.workdir.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in found)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_demo(workdir: Path, **extra_env: str) -> DemoRun:
    names = ("DEMO_ENVOY_PORT", "DEMO_ENVOY_ADMIN_PORT", "DEMO_ADMIN_PORT", "DEMO_ADS_PORT")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMO_")}
    env.update({name: str(port) for name, port in ports.items()}, **extra_env)
    process = subprocess.Popen(
        [sys.executable, str(RUN), "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    return DemoRun(process, workdir, ports)


def clean_up(run: DemoRun) -> None:
    """Whatever happened in the test: nothing it started survives it."""
    if run.process.poll() is None:
        run.process.kill()
        run.process.wait()
    state = run.workdir / "state.json"
    if state.exists():
        for pid in json.loads(state.read_text())["pids"].values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoRun]:
    run = start_demo(tmp_path / "demo")
    try:
        started = time.monotonic()
        try:
            line, rest = read_line(run.process, GRPC_CALL, START_TIMEOUT)
            run.grpc_call = line.strip()
            if not any(READY.search(after) for after in rest.split("\n")):
                read_line(run.process, READY, 30)
        except RuntimeError as error:
            raise AssertionError(f"{error}\n{run.logs()}") from None
        print(f"demo ready after {time.monotonic() - started:.1f}s")
        yield run
    finally:
        clean_up(run)


def test_demo_splits_retries_and_leaves_nothing_behind(demo: DemoRun) -> None:
    state = demo.state()
    assert set(state["pids"]) == {
        "api-v1-1",
        "api-v1-2",
        "api-v2-1",
        "greeter-1",
        "xds-server",
        "envoy",
    }
    assert state["ports"]["envoy"] == demo.ports["DEMO_ENVOY_PORT"]
    assert state["ports"]["admin"] == demo.ports["DEMO_ADMIN_PORT"]
    assert state["ports"]["ads"] == demo.ports["DEMO_ADS_PORT"]

    # A request through Envoy reaches a sample instance.
    status, body = demo.envoy("/hello")
    assert status == 200, body
    assert json.loads(body)["instance"] in state["pids"]

    # 80/20 between the subsets v1 and v2 of one service `api`, within ±10 points over 200
    # requests.
    answers = [demo.envoy() for _ in range(200)]
    assert [status for status, _ in answers] == [200] * 200
    services = Counter(json.loads(body)["service"] for _, body in answers)
    versions = Counter(json.loads(body)["version"] for _, body in answers)
    instances = Counter(json.loads(body)["instance"] for _, body in answers)
    print(f"split: {dict(versions)}; instances: {dict(instances)}")
    assert set(services) == {"api"}
    assert set(versions) == {"v1", "v2"}
    assert 0.70 <= versions["v1"] / 200 <= 0.90
    assert instances["api-v1-1"] > 0 and instances["api-v1-2"] > 0
    assert instances["api-v2-1"] == versions["v2"]  # v2 is the one v2 instance

    # One v1 instance answers 503 to everything: the retry policy hides it.
    broken = f"http://127.0.0.1:{state['ports']['api-v1-1']}"
    assert call(broken + "/control/fail?rate=1", "POST")[0] == 200
    statuses = Counter(demo.envoy()[0] for _ in range(60))
    _, control = call_json(broken + "/control")
    print(f"with api-v1-1 failing: {dict(statuses)}; api-v1-1 failed {control['failed']} times")
    assert statuses == {200: 60}
    assert control["failed"] > 0  # it was tried, and its failures were retried elsewhere

    # The printed gRPC line, run verbatim in a shell: grpcio resolves xds:///greeter through
    # xds-server (proxyless) and the greeter answers.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "GRPC_"))}
    done = subprocess.run(
        demo.grpc_call, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    print(f"{demo.grpc_call}\n-> {done.returncode}: {done.stdout}{done.stderr}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == {
        "service": "greeter",
        "instance": "greeter-1",
        "message": "hello, world",
    }
    _, proxies = call_json(f"http://127.0.0.1:{demo.ports['DEMO_ADMIN_PORT']}/v1/proxies")
    client = next(p for p in proxies["items"] if p["node_id"] == "demo-grpc-client")
    assert client["client_type"] == "grpc"
    assert [t["last_nack"] for t in client["types"].values()] == [None] * len(client["types"])

    # Ctrl-C stops everything: every recorded process is gone, every port free again.
    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(timeout=30) == 0
    assert {name: pid for name, pid in state["pids"].items() if alive(pid)} == {}
    assert [port for port in demo.ports.values() if not port_free(port)] == []


def test_check_mode_exits_once_traffic_flows(tmp_path: Path) -> None:
    run = start_demo(tmp_path / "demo", DEMO_EXIT_AFTER_READY="1")
    try:
        code = run.process.wait(timeout=START_TIMEOUT)
        assert run.process.stdout is not None
        output = run.process.stdout.read()
        assert code == 0, output + run.logs()
        assert "traffic flows through Envoy" in output
        pids = run.state()["pids"]
        assert len(pids) == 6
        assert {name: pid for name, pid in pids.items() if alive(pid)} == {}
    finally:
        clean_up(run)


def test_a_taken_port_is_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = start_demo(tmp_path / "demo", DEMO_ADMIN_PORT=str(port))
        try:
            code = run.process.wait(timeout=60)
            assert run.process.stdout is not None
            output = run.process.stdout.read()
        finally:
            clean_up(run)
    assert code == 2
    assert f"port {port} (xds-server's admin API) is already in use" in output
    assert "DEMO_ADMIN_PORT=" in output
    assert not (tmp_path / "demo" / "state.json").exists()  # nothing was started
