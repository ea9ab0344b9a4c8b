"""Small HTTP upstreams that answer with their own name, for tests through Envoy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Upstream:
    """An HTTP server on 127.0.0.1:0 answering ``200 <name>``; records request headers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict[str, str]] = []
        #: Status codes to answer with next, one per request (then 200 again).
        self.fail_next: list[int] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                upstream.requests.append({k.lower(): v for k, v in self.headers.items()})
                upstream.requests[-1][":path"] = self.path
                status = upstream.fail_next.pop(0) if upstream.fail_next else 200
                body = upstream.name.encode()
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.send_header("x-upstream", upstream.name)
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Upstream:
        self._thread.start()
        return self

    def stop(self) -> None:
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
