"""Real upstreams for the HTTP feature tests: a WebSocket echo server and a gRPC server.

The gRPC server uses generic handlers on raw bytes (no generated code): every method of
``pkg.Echo`` answers ``<server name>:<method>``, except ``Flaky`` (``UNAVAILABLE`` on the
first attempt of each payload, then an answer) and ``Slow`` (answers after ``delay``).
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from websockets.sync.server import Server, ServerConnection, serve

GRPC_SERVICE = "pkg.Echo"
GRPC_METHODS = ("Say", "Hello", "Flaky", "Slow")


class WebSocketEcho:
    """A WebSocket server on 127.0.0.1:0 sending every message back."""

    def __init__(self) -> None:
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> WebSocketEcho:
        def echo(connection: ServerConnection) -> None:
            for message in connection:
                connection.send(message)

        self._server = serve(echo, "127.0.0.1", 0)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)


class GrpcEcho:
    """A gRPC server on 127.0.0.1:0 named ``name`` (see the module docstring)."""

    def __init__(self, name: str, delay: float = 2.0) -> None:
        self.name = name
        self.delay = delay
        #: Attempts seen per ``Flaky`` payload.
        self.flaky_attempts: Counter[bytes] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None
        self.port = 0

    def _answer(self, method: str) -> Any:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            if method == "Flaky":
                with self._lock:
                    self.flaky_attempts[request] += 1
                    first = self.flaky_attempts[request] == 1
                if first:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "first attempt refused")
            elif method == "Slow":
                self._stopping.wait(self.delay)  # the scenario: a slow answer
            return f"{self.name}:{method}".encode()

        return grpc.unary_unary_rpc_method_handler(handle)

    def start(self) -> GrpcEcho:
        server = grpc.server(ThreadPoolExecutor(max_workers=8))
        handlers = {method: self._answer(method) for method in GRPC_METHODS}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(GRPC_SERVICE, handlers),)
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.stop(grace=None)
