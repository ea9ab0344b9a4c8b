"""A raw TCP echo server on 127.0.0.1:0 (one thread per connection), and a client for it.

Each line a client sends comes back prefixed with the server's name (``"echo-a hello\\n"``),
so a client behind a proxy knows which backend answered. ``connections`` counts accepted
connections.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any


class TcpEcho:
    __test__ = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self._lock = threading.Lock()
        echo = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with echo._lock:
                    echo.connections += 1
                try:
                    for line in self.rfile:
                        self.wfile.write(echo.name.encode() + b" " + line)
                        self.wfile.flush()
                except OSError:
                    pass  # the client (or Envoy) went away

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> TcpEcho:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def read_line(connection: socket.socket) -> bytes:
    """Bytes up to and including the first newline (fewer if the peer closes first)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def echo_once(port: int, text: str, timeout: float = 5.0) -> str:
    """Send one line on a new connection to 127.0.0.1:``port``; the answer without its
    newline ("" if the connection closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(text.encode() + b"\n")
        return read_line(connection).decode().rstrip("\n")
