"""A sample HTTP service for the demo: it says who answered, and can be told to misbehave.

    python demo/sample_service.py --name api --version v1 --port 0 [--instance api-v1-1]
        [--host 127.0.0.1] [--consul URL --register] [--advertise ADDRESS]

Every request (any method, any path) is answered with
``{"service": "api", "version": "v1", "instance": "api-v1-1"}``, except:

- ``POST /control/fail?rate=0.5``: answer 503 for that fraction of the requests (spread evenly,
  so ``rate=0.5`` fails every other request; ``rate=1`` fails them all);
- ``POST /control/slow?ms=500``: wait that long before answering;
- ``POST /control/health?status=fail`` (or ``pass``): make ``/health`` answer 503 (or 200);
- ``POST /control/reset``: behave normally again;
- ``GET /control``: the current settings and counters (requests served, failures injected);
- ``GET /health``: 200, or 503 while told to fail health.

Control requests and ``/health`` are never failed or slowed down. Prints ``listening PORT``
once it accepts connections and nothing per request. With ``--consul URL`` (or
``--register``, which uses ``CONSUL_HTTP_ADDR``) it registers itself with the Consul agent,
with an HTTP check on ``/health`` every 2s, and deregisters on SIGTERM or SIGINT.
Standard library only, so it runs in any Python 3.11 image.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
CHECK_INTERVAL = "2s"
CHECK_TIMEOUT = "1s"


class Behaviour:
    """What the instance has been told to do; shared by the handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.fail_rate = 0.0
            self.slow_ms = 0
            self.health_failing = False
            self.requests = 0
            self.failed = 0
            self._debt = 0.0

    def configure(
        self, fail_rate: float | None = None, slow_ms: int | None = None, health: bool | None = None
    ) -> None:
        with self._lock:
            if fail_rate is not None:
                self.fail_rate = fail_rate
                self._debt = 0.0
            if slow_ms is not None:
                self.slow_ms = slow_ms
            if health is not None:
                self.health_failing = not health

    def next_request(self) -> tuple[bool, int]:
        """Count a request; return whether to fail it and how long to delay it (ms)."""
        with self._lock:
            self.requests += 1
            self._debt += self.fail_rate
            fail = self._debt >= 1.0 - 1e-9
            if fail:
                self._debt -= 1.0
                self.failed += 1
            return fail, self.slow_ms

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "fail_rate": self.fail_rate,
                "slow_ms": self.slow_ms,
                "health": "critical" if self.health_failing else "passing",
                "requests": self.requests,
                "failed": self.failed,
            }


class BadRequest(ValueError):
    pass


def _number(query: dict[str, list[str]], name: str, low: float, high: float) -> float:
    values = query.get(name)
    if not values:
        raise BadRequest(f"missing query parameter {name!r}")
    try:
        value = float(values[0])
    except ValueError:
        raise BadRequest(f"{name}={values[0]!r} is not a number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def make_handler(identity: dict[str, str], behaviour: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "sample-service"

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = (json.dumps(body) + "\n").encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("x-instance", identity["instance"])
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/health":
                failing = behaviour.snapshot()["health"] != "passing"
                self._reply(503 if failing else 200, {**identity, "health": _health(failing)})
            elif url.path == "/control" or url.path.startswith("/control/"):
                self._control(url.path, urllib.parse.parse_qs(url.query))
            else:
                fail, delay_ms = behaviour.next_request()
                if delay_ms:
                    time.sleep(delay_ms / 1000)
                if fail:
                    self._reply(503, {**identity, "error": "failure injected by /control/fail"})
                else:
                    self._reply(200, identity)

        def _control(self, path: str, query: dict[str, list[str]]) -> None:
            if path == "/control" and self.command == "GET":
                self._reply(200, {**identity, **behaviour.snapshot()})
                return
            if self.command != "POST":
                self._reply(405, {"error": f"{self.command} {path}: use POST"})
                return
            try:
                if path == "/control/fail":
                    behaviour.configure(fail_rate=_number(query, "rate", 0, 1))
                elif path == "/control/slow":
                    behaviour.configure(slow_ms=int(_number(query, "ms", 0, 600_000)))
                elif path == "/control/health":
                    status = (query.get("status") or [""])[0]
                    if status not in ("pass", "fail"):
                        raise BadRequest("status must be pass or fail")
                    behaviour.configure(health=status == "pass")
                elif path == "/control/reset":
                    behaviour.reset()
                else:
                    self._reply(404, {"error": f"unknown control {path}"})
                    return
            except BadRequest as error:
                self._reply(400, {"error": str(error)})
                return
            self._reply(200, {**identity, **behaviour.snapshot()})

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: no line per request."""

    return Handler


def _health(failing: bool) -> str:
    return "critical" if failing else "passing"


# --- Consul ---------------------------------------------------------------------------------


def consul_base(address: str) -> str:
    """``consul:8500`` (as in ``CONSUL_HTTP_ADDR``) or ``http://consul:8500`` -> a base URL."""
    return (address if "://" in address else f"http://{address}").rstrip("/")


def advertised_address(bind_host: str, consul: str) -> str:
    """The address Consul (and Envoy) should use to reach us: the bound host if specific,
    else the local address of the route to the Consul agent."""
    if bind_host not in ("", "0.0.0.0", "::"):
        return bind_host
    target = urllib.parse.urlsplit(consul)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((target.hostname or "127.0.0.1", target.port or 8500))  # sends nothing
        return str(probe.getsockname()[0])


def registration(identity: dict[str, str], address: str, port: int) -> dict[str, Any]:
    """The body of ``PUT /v1/agent/service/register``."""
    return {
        "ID": identity["instance"],
        "Name": identity["service"],
        "Tags": [identity["version"]],
        "Address": address,
        "Port": port,
        "Meta": {"version": identity["version"], "instance": identity["instance"]},
        "Check": {
            "Name": f"HTTP /health of {identity['instance']}",
            "HTTP": f"http://{address}:{port}/health",
            "Method": "GET",
            "Interval": CHECK_INTERVAL,
            "Timeout": CHECK_TIMEOUT,
            "DeregisterCriticalServiceAfter": "1m",
        },
    }


def consul_put(base: str, path: str, body: dict[str, Any] | None = None) -> None:
    headers = {"content-type": "application/json"}
    token = os.environ.get("CONSUL_HTTP_TOKEN")
    if token:
        headers["x-consul-token"] = token
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(base + path, data=data, headers=headers, method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def register(base: str, body: dict[str, Any], timeout: float) -> bool:
    """Register, retrying while the agent is not up yet; False if a stop signal came first."""
    deadline = time.monotonic() + timeout
    delay = 0.25
    while True:
        try:
            consul_put(base, "/v1/agent/service/register", body)
            return True
        except urllib.error.HTTPError as error:
            if error.code < 500:  # the agent refused the body: retrying will not help
                detail = error.read().decode(errors="replace").strip()
                raise RuntimeError(f"Consul at {base} refused the registration: {detail}") from None
            failure: OSError = error
        except OSError as error:
            failure = error
        if time.monotonic() + delay > deadline:
            raise RuntimeError(f"cannot register with Consul at {base}: {failure}")
        # The back-off doubles as a wait for SIGTERM/SIGINT (they are blocked, see main).
        if signal.sigtimedwait(STOP_SIGNALS, delay) is not None:
            return False
        delay = min(delay * 2, 2.0)


# --- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--name", required=True, help="service name, e.g. api")
    parser.add_argument("--version", required=True, help="version label, e.g. v1")
    parser.add_argument("--instance", help="instance id (default NAME-VERSION-HOSTNAME)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    parser.add_argument("--consul", help="Consul agent URL; implies --register")
    parser.add_argument("--register", action="store_true", help="register with Consul")
    parser.add_argument("--advertise", help="address to register (default: detected)")
    parser.add_argument("--register-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    instance = args.instance or f"{args.name}-{args.version}-{socket.gethostname()}"
    identity = {"service": args.name, "version": args.version, "instance": instance}
    # Stop signals are taken with sigwait, by the main thread only: block them everywhere.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        server = ThreadingHTTPServer((args.host, args.port), make_handler(identity, Behaviour()))
    except OSError as error:
        print(f"sample_service: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    server.daemon_threads = True
    port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    print(f"listening {port}", flush=True)

    consul = args.consul or (os.environ.get("CONSUL_HTTP_ADDR") if args.register else None)
    if args.register and not consul:
        consul = "127.0.0.1:8500"
    registered = False
    try:
        if consul:
            base = consul_base(consul)
            address = args.advertise or advertised_address(args.host, base)
            body = registration(identity, address, port)
            registered = register(base, body, args.register_timeout)
            if not registered:
                return 0
            print(f"registered {instance} at {address}:{port} with {base}", file=sys.stderr)
        signal.sigwait(STOP_SIGNALS)
        return 0
    except RuntimeError as error:
        print(f"sample_service: {error}", file=sys.stderr)
        return 1
    finally:
        if registered and consul:
            try:
                consul_put(consul_base(consul), f"/v1/agent/service/deregister/{instance}")
            except OSError as error:
                print(f"sample_service: cannot deregister: {error}", file=sys.stderr)
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
