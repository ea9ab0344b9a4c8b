"""The applications behind mesh sidecars in tests: an HTTP server and a TCP echo.

Each runs as its own process (``python -m tests.support.mesh_apps http|tcp-echo``), so that
it can run inside a test host (``tests/support/netns.py``), and prints ``listening PORT``
once it accepts connections.

- ``http``: every request but ``/.mesh/*`` gets ``200`` and JSON naming the instance and
  echoing what arrived: ``{"instance", "method", "path", "headers": {lower-case name: value},
  "body"}`` (so a test reads the ``x-forwarded-client-cert`` the sidecar added).
  ``POST /.mesh/http`` and ``POST /.mesh/tcp`` make the application itself call out, from
  inside its host, e.g. to its sidecar's upstream port on ``127.0.0.1`` (which the test, in
  the root namespace, cannot reach): see ``http_call`` and ``tcp_call`` for the JSON.
- ``tcp-echo``: sends back every byte it receives, until the peer closes.

``MeshApp`` starts either, in a host or in the root namespace, and calls it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.netns import TestHost

ROOT = Path(__file__).resolve().parents[2]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the applications (run in their own process) ------------------------------------------------


def http_call(request: dict[str, Any]) -> dict[str, Any]:
    """Make the HTTP request ``{"url", "method"?, "headers"?, "body"?, "timeout"?}``.

    The answer: ``{"status", "headers", "body"}``, with ``status`` 0 and ``error`` when no
    HTTP answer came (refused, reset, handshake failed, timed out)."""
    body = request.get("body")
    outgoing = urllib.request.Request(
        str(request["url"]),
        data=body.encode() if isinstance(body, str) else None,
        method=str(request.get("method", "GET")),
        headers=dict(request.get("headers", {})),
    )
    timeout = float(request.get("timeout", 5.0))
    try:
        with _OPENER.open(outgoing, timeout=timeout) as response:
            return _answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return _answer(error.code, dict(error.headers), error.read())
    except (OSError, urllib.error.URLError) as error:
        return {"status": 0, "headers": {}, "body": "", "error": repr(error)}


def _answer(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    return {"status": status, "headers": headers, "body": body.decode(errors="replace")}


def tcp_call(request: dict[str, Any]) -> dict[str, Any]:
    """Send ``data`` to ``host:port`` and read until ``len(data)`` bytes came back or the peer
    closed: ``{"reply", "closed"}`` (``closed``: the peer closed before all came back), or
    ``error`` when the connection failed or timed out."""
    data = str(request.get("data", "ping")).encode()
    timeout = float(request.get("timeout", 5.0))
    reply = b""
    try:
        with socket.create_connection((request["host"], int(request["port"])), timeout) as conn:
            conn.sendall(data)
            while len(reply) < len(data):
                chunk = conn.recv(65536)
                if not chunk:
                    return {"reply": reply.decode(errors="replace"), "closed": True}
                reply += chunk
    except OSError as error:
        return {"reply": reply.decode(errors="replace"), "closed": True, "error": repr(error)}
    return {"reply": reply.decode(errors="replace"), "closed": False}


_CALLS = {"/.mesh/http": http_call, "/.mesh/tcp": tcp_call}


def http_server(name: str, address: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes (see upstream.py)

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            call = _CALLS.get(self.path) if self.command == "POST" else None
            if call is not None:
                answer = call(json.loads(body or b"{}"))
            else:
                answer = {
                    "instance": name,
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode(errors="replace"),
                }
            data = json.dumps(answer).encode()
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("x-instance", name)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    return server


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while chunk := self.request.recv(65536):
            self.request.sendall(chunk)


def tcp_echo_server(address: str, port: int) -> socketserver.ThreadingTCPServer:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer((address, port), _Echo)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mesh_apps", description=__doc__)
    parser.add_argument("kind", choices=["http", "tcp-echo"])
    parser.add_argument("--name", default="app", help="the instance name answers carry")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server: socketserver.TCPServer = (
        http_server(args.name, args.address, args.port)
        if args.kind == "http"
        else tcp_echo_server(args.address, args.port)
    )
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.2)


# -- the test side: start one and call it -------------------------------------------------------


class MeshApp:
    """One application process, in ``host`` or (``host=None``) in the root namespace.

    ``address`` is what it binds: ``0.0.0.0`` (the default) is reachable from the test and
    the other hosts; ``127.0.0.1`` only from its own host (its sidecar)."""

    def __init__(
        self,
        kind: str,
        name: str,
        *,
        host: TestHost | None = None,
        address: str = "0.0.0.0",
        port: int = 0,
    ) -> None:
        self.kind = kind
        self.name = name
        self.host = host
        self.bind = address
        argv = [sys.executable, "-m", "tests.support.mesh_apps", kind, "--name", name]
        self.argv = [*argv, "--address", address, "--port", str(port)]
        self.process: subprocess.Popen[str] | None = None
        self.port = port
        #: Its stderr (tracebacks): a file, so that no pipe fills up in a long test.
        descriptor, log = tempfile.mkstemp(prefix=f"mesh-app-{name}-", suffix=".log")
        os.close(descriptor)
        self.log_path = Path(log)

    @classmethod
    def http(cls, name: str, host: TestHost | None = None, **kwargs: Any) -> MeshApp:
        return cls("http", name, host=host, **kwargs).start()

    @classmethod
    def tcp_echo(cls, name: str, host: TestHost | None = None, **kwargs: Any) -> MeshApp:
        return cls("tcp-echo", name, host=host, **kwargs).start()

    @property
    def address(self) -> str:
        """Where the test (root namespace) reaches it."""
        if self.host is not None:
            return self.host.address
        return "127.0.0.1" if self.bind == "0.0.0.0" else self.bind

    def url(self, path: str = "/") -> str:
        return f"http://{self.address}:{self.port}{path}"

    def start(self, timeout: float = 15.0) -> MeshApp:
        from tests.support.sample import LISTENING, read_line

        with self.log_path.open("wb") as log:
            options: dict[str, Any] = {
                "stdout": subprocess.PIPE,
                "stderr": log,
                "cwd": ROOT,
                "env": {**os.environ, "PYTHONPATH": str(ROOT)},
            }
            if self.host is not None:
                self.process = self.host.popen(self.argv, **options)
            else:
                self.process = subprocess.Popen(self.argv, text=True, **options)
        try:
            line, _ = read_line(self.process, LISTENING, timeout)
        except Exception as error:
            self.stop(keep_log=True)
            raise RuntimeError(f"{self.name} did not start: {self.logs()}") from error
        self.port = int(line.split()[1])
        return self

    def get(self, path: str = "/", **kwargs: Any) -> dict[str, Any]:
        """``http_call`` from the test to this application."""
        return http_call({"url": self.url(path), **kwargs})

    def call_http(self, url: str, **kwargs: Any) -> dict[str, Any]:
        """Have the application make an HTTP request from its host (``http_call``)."""
        return self._ask("/.mesh/http", {"url": url, **kwargs})

    def call_tcp(self, host: str, port: int, data: str = "ping", **kwargs: Any) -> dict[str, Any]:
        """Have the application open a TCP connection from its host (``tcp_call``)."""
        return self._ask("/.mesh/tcp", {"host": host, "port": port, "data": data, **kwargs})

    def _ask(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        timeout = float(request.get("timeout", 5.0)) + 5.0
        answer = http_call(
            {
                "url": self.url(path),
                "method": "POST",
                "body": json.dumps(request),
                "timeout": timeout,
            }
        )
        if answer["status"] != 200:
            raise RuntimeError(f"{self.name} did not answer {path}: {answer}")
        result: dict[str, Any] = json.loads(answer["body"])
        return result

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, *, keep_log: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if not keep_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> MeshApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tcp_echo_call(host: str, port: int, data: str = "ping", timeout: float = 5.0) -> dict[str, Any]:
    """``tcp_call`` from the test."""
    return tcp_call({"host": host, "port": port, "data": data, "timeout": timeout})


if __name__ == "__main__":
    main()
