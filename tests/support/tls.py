"""TLS from the test's side: a client that connects with a chosen SNI, versions, ciphers and
client certificate, and an HTTP(S) upstream that records SNI and client certificates and can
hold a request until the test lets it go."""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.support.pki import KeyPair


def _files(pair: KeyPair) -> tuple[str, str]:
    directory = Path(tempfile.mkdtemp(prefix="tls-test-"))
    return tuple(str(p) for p in pair.write(directory, "pair"))  # type: ignore[return-value]


def client_context(
    ca_pem: str,
    *,
    client: KeyPair | None = None,
    min_version: ssl.TLSVersion | None = None,
    max_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A client that trusts ``ca_pem`` only and checks the server's name."""
    context = ssl.create_default_context(cadata=ca_pem)
    if ciphers is not None:
        context.set_ciphers(ciphers)
    if min_version is not None:
        context.minimum_version = min_version
    if max_version is not None:
        context.maximum_version = max_version
    if client is not None:
        chain, key = _files(client)
        context.load_cert_chain(chain, key)
    return context


def connect(
    port: int, server_name: str, context: ssl.SSLContext, timeout: float = 5.0
) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:``port`` asking for ``server_name`` (SNI)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise


def peer_certificate(connection: ssl.SSLSocket) -> x509.Certificate:
    der = connection.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def dns_names(certificate: x509.Certificate) -> list[str]:
    extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(extension.value.get_values_for_type(x509.DNSName))


def send_request(connection: socket.socket, host: str, path: str = "/") -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    connection.sendall(request.encode())


def read_response(connection: socket.socket) -> tuple[int, dict[str, str], str]:
    """Everything up to the close (the request asked for ``Connection: close``)."""
    data = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body.decode(errors="replace")


def https_get(
    port: int, server_name: str, context: ssl.SSLContext, path: str = "/"
) -> tuple[int, dict[str, str], str]:
    with connect(port, server_name, context) as connection:
        send_request(connection, server_name, path)
        return read_response(connection)


def plain_get(port: int, host: str, path: str = "/") -> tuple[int, dict[str, str], str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        send_request(connection, host, path)
        return read_response(connection)


@dataclass
class Seen:
    """What an upstream saw of one request."""

    path: str
    headers: dict[str, str]
    #: The client certificate's subject (RFC 4514), when one was presented over TLS.
    client_subject: str | None = None


@dataclass
class TestUpstream:
    """An HTTP server on 127.0.0.1:0 answering ``200 <name>``; with ``server`` (a key pair)
    it speaks TLS, and with ``client_ca`` it requires a client certificate from that CA.
    Requests to ``/slow`` wait until ``release`` is set (at most ``hold`` seconds)."""

    __test__ = False

    name: str
    server: KeyPair | None = None
    client_ca: str | None = None
    hold: float = 20.0
    seen: list[Seen] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        upstream = self
        context = self._context() if self.server is not None else None

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                if context is not None:  # the handshake in this request's thread
                    self.request = context.wrap_socket(self.request, server_side=True)
                super().setup()

            def do_GET(self) -> None:
                subject = None
                if isinstance(self.connection, ssl.SSLSocket):
                    der = self.connection.getpeercert(binary_form=True)
                    if der is not None:
                        subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
                upstream.seen.append(
                    Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, subject)
                )
                if self.path.startswith("/slow"):
                    upstream.release.wait(upstream.hold)
                body = upstream.name.encode()
                try:
                    self.send_response(200)
                    self.send_header("content-type", "text/plain")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # failed handshakes are part of the tests

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _context(self) -> ssl.SSLContext:
        assert self.server is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        chain, key = _files(self.server)
        context.load_cert_chain(chain, key)
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cadata=self.client_ca)

        def record(connection: Any, server_name: str | None, _context: Any) -> None:
            self.server_names.append(server_name)

        context.sni_callback = record
        return context

    def start(self) -> TestUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
