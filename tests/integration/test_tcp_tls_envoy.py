"""TCP and TLS passthrough, configured through REST, in a real Envoy with real upstreams.

One server (``xds-server serve``, a static registry, a SQLite store) and one Envoy for the
module. Backends: raw TCP echo servers that prefix each answer with their name, and two TLS
(HTTPS) servers with certificates of their own. Through ``tcp`` listeners: connections echo,
a weighted split holds, an idle connection is closed. Through one ``tls`` listener: each
client sees the certificate of the backend its SNI chose (Envoy never terminates TLS), and a
client whose SNI no route lists (or that sends none) is refused.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.integration.rest_stack import Api, converge, envoy_config, start_server
from tests.support.envoy import Envoy, free_ports, running_envoy
from tests.support.pki import TestCa
from tests.support.tcp_echo import TcpEcho, echo_once, read_line
from tests.support.tls import TestUpstream as TlsUpstream
from tests.support.tls import (
    client_context,
    connect,
    dns_names,
    fingerprint,
    peer_certificate,
    read_response,
    send_request,
)

pytestmark = pytest.mark.envoy

IDLE_TIMEOUT = "500ms"
SPLIT = {"echo-a": 70, "echo-b": 30}
SPLIT_CONNECTIONS = 1000
SHOP_NAMES = ("shop.example.com", "*.shop.example.com")
API_NAMES = ("api.example.com",)


@dataclass
class Stack:
    api: Api
    envoy: Envoy
    echo_port: int
    split_port: int
    tls_port: int
    ca: TestCa
    shop: TlsUpstream
    api_upstream: TlsUpstream


def _registry(services: dict[str, int], path: Path) -> None:
    lines = ["services:"]
    for service, port in services.items():
        lines += [
            f"  {service}:",
            "    endpoints:",
            f"      - {{address: 127.0.0.1, port: {port}}}",
        ]
    path.write_text("\n".join(lines) + "\n")


def _listener(name: str, port: int, protocol: str) -> dict[str, Any]:
    return {
        "kind": "Listener",
        "name": name,
        "spec": {"address": "127.0.0.1", "port": port, "protocol": protocol},
    }


def _backends(weights: dict[str, int]) -> list[dict[str, Any]]:
    return [{"service": service, "weight": weight} for service, weight in weights.items()]


def _documents(echo_port: int, split_port: int, tls_port: int) -> list[dict[str, Any]]:
    return [
        _listener("echo", echo_port, "tcp"),
        _listener("split", split_port, "tcp"),
        _listener("sni", tls_port, "tls"),
        {
            "kind": "TcpRoute",
            "name": "echo",
            "spec": {
                "listeners": ["echo"],
                "backends": [{"service": "echo-a"}],
                "idle_timeout": IDLE_TIMEOUT,
            },
        },
        {
            "kind": "TcpRoute",
            "name": "split",
            "spec": {"listeners": ["split"], "backends": _backends(SPLIT), "access_log": False},
        },
        {
            "kind": "TlsRoute",
            "name": "shop",
            "spec": {
                "listeners": ["sni"],
                "hostnames": list(SHOP_NAMES),
                "backends": [{"service": "tls-shop"}],
            },
        },
        {
            "kind": "TlsRoute",
            "name": "api",
            "spec": {
                "listeners": ["sni"],
                "hostnames": list(API_NAMES),
                "backends": [{"service": "tls-api"}],
            },
        },
    ]


def _handshake(stack: Stack, server_name: str) -> tuple[str, list[str], str]:
    """Through the tls listener with SNI ``server_name``: the peer certificate's
    fingerprint and DNS names, and the body of a GET (the backend's name)."""
    context = client_context(stack.ca.pem)
    with connect(stack.tls_port, server_name, context) as connection:
        certificate = peer_certificate(connection)
        send_request(connection, server_name)
        _, _, body = read_response(connection)
    return fingerprint(certificate), dns_names(certificate), body


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("tcp-tls-envoy")
    ca = TestCa()
    echoes = {name: TcpEcho(name).start() for name in SPLIT}
    shop = TlsUpstream("shop", server=ca.issue(*SHOP_NAMES))
    api_upstream = TlsUpstream("api", server=ca.issue(*API_NAMES))
    server = None
    try:
        shop.start()
        api_upstream.start()
        registry = tmp / "registry.yaml"
        ports = {name: echo.port for name, echo in echoes.items()}
        _registry({**ports, "tls-shop": shop.port, "tls-api": api_upstream.port}, registry)
        server = start_server(registry, tmp / "store.db")
        echo_port, split_port, tls_port = free_ports(3)
        with running_envoy(envoy_config(server.ads_port)) as envoy:
            api = Api(server.admin)
            try:
                api.apply(_documents(echo_port, split_port, tls_port))
                stack = Stack(api, envoy, echo_port, split_port, tls_port, ca, shop, api_upstream)
                converge(
                    "TcpRoute applied -> Envoy forwards connections",
                    lambda: echo_once(echo_port, "ready") == "echo-a ready",
                    envoy,
                )
                converge(
                    "TlsRoute applied -> Envoy passes TLS through",
                    lambda: _handshake(stack, "api.example.com")[2] == "api",
                    envoy,
                )
                yield stack
            finally:
                api.close()
    finally:
        if server is not None:
            server.kill()
        shop.stop()
        api_upstream.stop()
        for echo in echoes.values():
            echo.stop()


def test_a_hundred_connections_echo_through_a_tcp_listener(stack: Stack) -> None:
    lines = [f"line-{index}" for index in range(100)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda line: echo_once(stack.echo_port, line), lines))
    assert answers == [f"echo-a {line}" for line in lines]


def test_a_weighted_split_holds_over_a_thousand_connections(stack: Stack) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(lambda i: echo_once(stack.split_port, f"c{i}"), range(SPLIT_CONNECTIONS))
        )
    counts = Counter(answer.split(" ", 1)[0] for answer in answers)
    print(f"split over {SPLIT_CONNECTIONS} connections: {dict(counts)}")
    assert set(counts) == set(SPLIT), counts  # every answer came from a backend
    total = sum(SPLIT.values())
    for service, weight in SPLIT.items():
        share = 100 * counts[service] / SPLIT_CONNECTIONS
        assert abs(share - 100 * weight / total) <= 5, (service, share)


def test_an_idle_connection_is_closed_after_the_idle_timeout(stack: Stack) -> None:
    with socket.create_connection(("127.0.0.1", stack.echo_port), timeout=10) as connection:
        connection.sendall(b"first\n")
        assert read_line(connection) == b"echo-a first\n"
        # Nothing more is sent: Envoy closes the connection (recv returns b"") long before
        # the socket's own 10 s timeout would fire.
        assert connection.recv(4096) == b""


@pytest.mark.parametrize(
    ("server_name", "backend"),
    [
        ("shop.example.com", "shop"),
        ("a.shop.example.com", "shop"),  # the "*.shop.example.com" wildcard
        ("api.example.com", "api"),
    ],
)
def test_sni_chooses_the_backend_whose_own_certificate_the_client_sees(
    stack: Stack, server_name: str, backend: str
) -> None:
    upstream = stack.shop if backend == "shop" else stack.api_upstream
    assert upstream.server is not None
    # The backend's own leaf certificate (the first of its chain).
    expected = fingerprint(x509.load_pem_x509_certificates(upstream.server.chain.encode())[0])
    seen_fingerprint, names, body = _handshake(stack, server_name)
    assert body == backend
    assert seen_fingerprint == expected
    assert names == list(SHOP_NAMES if backend == "shop" else API_NAMES)
    assert server_name in upstream.server_names  # the SNI reached the backend untouched


@pytest.mark.parametrize("server_name", ["unknown.example.com", "example.com", None])
def test_an_unknown_or_missing_sni_is_refused(stack: Stack, server_name: str | None) -> None:
    context = client_context(stack.ca.pem)
    if server_name is None:
        context.check_hostname = False  # a client that sends no SNI at all
    before = len(stack.shop.server_names) + len(stack.api_upstream.server_names)
    raw = socket.create_connection(("127.0.0.1", stack.tls_port), timeout=5)
    with raw, pytest.raises((ssl.SSLError, ConnectionError)):
        context.wrap_socket(raw, server_hostname=server_name).close()
    after = len(stack.shop.server_names) + len(stack.api_upstream.server_names)
    assert after == before  # no backend saw a handshake


def test_the_stream_routes_are_listed_and_read_back_through_rest(stack: Stack) -> None:
    listed = stack.api.http.get("/v1/tls-routes").json()["items"]
    assert sorted(item["name"] for item in listed) == ["api", "shop"]
    got = stack.api.http.get("/v1/tcp-routes/split").json()
    assert got["spec"]["backends"] == _backends(SPLIT)
    assert got["revision"] >= 1


def test_the_command_line_lists_and_reads_the_stream_routes(stack: Stack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDS_SERVER_")}

    def cli(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "xds_server", "--server", str(stack.api.http.base_url), *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
        return done.stdout

    table = cli("get", "tcp-routes")
    assert "split -> echo-a:70,echo-b:30" in table
    assert "sni api.example.com -> tls-api:1" in cli("get", "tls-routes")
    one = json.loads(cli("get", "tls-route", "shop", "-o", "json"))
    assert one["spec"]["hostnames"] == list(SHOP_NAMES)
