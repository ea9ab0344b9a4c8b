"""Small HTTP upstreams that answer with their own name, for tests through Envoy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Upstream:
    """An HTTP server on 127.0.0.1:0 answering ``200 <name>``; records request headers.

    ``delay`` (seconds, also settable later) holds every answer back that long: a slow
    instance, for request timeouts.
    """

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        #: Each request's headers, names lower-cased (a repeated header keeps its last
        #: value), plus ``:path``.
        self.requests: list[dict[str, str]] = []
        #: Each request's header lines as received, in order, repeats kept.
        self.header_lines: list[list[tuple[str, str]]] = []
        #: Status codes to answer with next, one per request (then 200 again).
        self.fail_next: list[int] = []
        self._stopping = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm
            # holds the body back until the proxy's delayed ACK (~40 ms per request).
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                upstream.requests.append({k.lower(): v for k, v in self.headers.items()})
                upstream.requests[-1][":path"] = self.path
                upstream.header_lines.append([(k.lower(), v) for k, v in self.headers.items()])
                status = upstream.fail_next.pop(0) if upstream.fail_next else 200
                if upstream.delay > 0:
                    upstream._stopping.wait(upstream.delay)  # the scenario: a slow answer
                body = upstream.name.encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", str(len(body)))
                    self.send_header("x-upstream", upstream.name)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up (a proxy's timeout): nobody is left to answer.
                    self.close_connection = True

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    def start(self) -> Upstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def upstreams(*names: str) -> Iterator[list[Upstream]]:
    started = [Upstream(name).start() for name in names]
    try:
        yield started
    finally:
        for upstream in started:
            upstream.stop()
