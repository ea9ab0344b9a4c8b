"""HTTP rule features written through the REST API work in a real Envoy: WebSocket
upgrades, gRPC routing, retries and deadlines, CORS, fault injection and cookie affinity.

One server (``xds-server serve``, static registry, SQLite store) and one Envoy for the
module, with two listeners: ``public`` allows no upgrade, ``upgrades`` allows WebSocket for
every route. Upstreams are real: HTTP servers answering their name, a WebSocket echo server
and gRPC servers (see ``http_apps``). Each test attaches its own route on its own hostname
and polls until Envoy behaves accordingly.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
import yaml
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.integration.http_apps import GRPC_SERVICE, GrpcEcho, WebSocketEcho
from tests.integration.rest_stack import (
    RestEnvoy,
    envoy_cluster,
    listener,
    registry_yaml,
    rest_envoy,
    route,
    to,
)
from tests.integration.test_translate_envoy_validate import (
    EXAMPLES,
    assert_envoy_accepts,
    config_of,
)
from tests.support.envoy import free_port
from tests.support.upstream import Upstream
from xds_server.model import Inventory, validate_config
from xds_server.model.inventory import Endpoint, Service
from xds_server.translate import translate

pytestmark = pytest.mark.envoy

HTTP_SERVICES = {
    "web": ["web-1"],
    "faulty": ["faulty-1"],
    "sticky": ["sticky-1", "sticky-2", "sticky-3", "sticky-4"],
}
GRPC_SERVERS = ("grpc-a", "grpc-b")
SLOW_GRPC = 2.0  # seconds the gRPC "Slow" method takes


@dataclass
class Stack(RestEnvoy):
    upgrades_port: int
    grpc: dict[str, GrpcEcho]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("http-features")
    http = {name: Upstream(name).start() for names in HTTP_SERVICES.values() for name in names}
    echo = WebSocketEcho().start()
    grpc_servers = {name: GrpcEcho(name, delay=SLOW_GRPC).start() for name in GRPC_SERVERS}
    try:
        registry = tmp / "registry.yaml"
        registry.write_text(
            registry_yaml(
                {
                    **{s: [http[n] for n in names] for s, names in HTTP_SERVICES.items()},
                    "echo": [echo],
                    **{name: [g] for name, g in grpc_servers.items()},
                }
            )
        )
        with rest_envoy(registry, tmp / "store.db") as rest:
            upgrades_port = free_port()
            stack = Stack(
                rest.server, rest.envoy, rest.api, rest.traffic, upgrades_port, grpc_servers
            )
            upgrades = listener("upgrades", upgrades_port)
            upgrades["spec"]["http"] = {"upgrades": ["websocket"]}
            stack.api.apply([listener("public", stack.traffic.port), upgrades])
            stack.converge(
                "listeners PUT -> Envoy listens",
                lambda: (
                    stack.traffic.get("nothing.test").status_code == 404
                    and httpx.get(f"http://127.0.0.1:{upgrades_port}/").status_code == 404
                ),
            )
            yield stack
    finally:
        for upstream in http.values():
            upstream.stop()
        echo.stop()
        for grpc_server in grpc_servers.values():
            grpc_server.stop()


# -- WebSocket ------------------------------------------------------------------------------


def _websocket(port: int, host: str) -> ClientConnection:
    """A WebSocket handshake through Envoy's listener on ``port``, for virtual host ``host``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return connect(f"ws://{host}:{port}/chat", sock=sock, open_timeout=5)
    except BaseException:
        sock.close()
        raise


def _round_trips(connection: ClientConnection, count: int) -> list[str]:
    answers = []
    for index in range(count):
        connection.send(f"message {index}")
        answers.append(str(connection.recv(timeout=5)))
    return answers


def _handshake_status(port: int, host: str) -> int | None:
    """The status Envoy answers a handshake with when it refuses it; ``None`` if it upgrades."""
    try:
        with closing(_websocket(port, host)):
            return None
    except InvalidStatus as refused:
        return int(refused.response.status_code)


def test_websocket_through_a_rule_that_allows_it(stack: Stack) -> None:
    port = stack.traffic.port
    stack.api.apply(
        [
            route("ws", ["ws.test"], [{"backends": to("echo"), "upgrades": ["websocket"]}]),
            route("no-ws", ["no-ws.test"], [{"backends": to("echo")}]),
        ]
    )
    stack.converge(
        "route PUT -> Envoy upgrades the rule's requests",
        lambda: _handshake_status(port, "ws.test") is None,
    )
    with closing(_websocket(port, "ws.test")) as connection:
        answers = _round_trips(connection, 100)
    assert answers == [f"message {index}" for index in range(100)]
    # The listener allows no upgrade: a rule without one refuses the handshake.
    stack.converge(
        "route PUT -> Envoy routes no-ws.test", lambda: stack.traffic.get("no-ws.test").is_error
    )
    refused = _handshake_status(port, "no-ws.test")
    print("handshake on a rule without the upgrade:", refused)
    assert refused is not None and refused >= 400


def test_websocket_on_a_listener_that_allows_it(stack: Stack) -> None:
    stack.api.put(
        route("ws-listener", ["ws-listener.test"], [{"backends": to("echo")}], "upgrades")
    )
    stack.converge(
        "route PUT -> Envoy upgrades on the listener",
        lambda: _handshake_status(stack.upgrades_port, "ws-listener.test") is None,
    )
    with closing(_websocket(stack.upgrades_port, "ws-listener.test")) as connection:
        assert _round_trips(connection, 100) == [f"message {index}" for index in range(100)]
    # The same route on the listener without upgrades: refused.
    stack.api.put(route("ws-listener", ["ws-listener.test"], [{"backends": to("echo")}]))
    stack.converge(
        "route moved -> the handshake is refused",
        lambda: (_handshake_status(stack.traffic.port, "ws-listener.test") or 0) >= 400,
    )


# -- gRPC -----------------------------------------------------------------------------------


def _call(
    channel: grpc.Channel, method: str, payload: bytes = b"x", timeout: float = 5.0
) -> tuple[grpc.StatusCode, str]:
    """``pkg.Echo/<method>``'s status and answer (or error details)."""
    stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        f"/{GRPC_SERVICE}/{method}"
    )
    try:
        answer: bytes = stub(payload, timeout=timeout)
    except grpc.RpcError as error:
        return error.code(), str(error.details())
    return grpc.StatusCode.OK, answer.decode()


@pytest.fixture
def grpc_channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        f"127.0.0.1:{stack.traffic.port}", options=[("grpc.default_authority", "grpc.test")]
    ) as channel:
        yield channel


def test_grpc_methods_route_retry_and_time_out(stack: Stack, grpc_channel: grpc.Channel) -> None:
    say = {"grpc": {"service": GRPC_SERVICE, "method": "Say"}}
    stack.api.put(
        route(
            "grpc",
            ["grpc.test"],
            [
                {"matches": [say], "backends": to("grpc-a")},
                {
                    "matches": [{"grpc": {"service": GRPC_SERVICE, "method": "Flaky"}}],
                    "backends": to("grpc-a"),
                    "retry": {"retry_on": ["unavailable"], "num_retries": 2},
                },
                {
                    "matches": [{"grpc": {"service": GRPC_SERVICE, "method": "Slow"}}],
                    "backends": to("grpc-a"),
                    "timeouts": {"grpc_max": "100ms"},
                },
                # Every other method of the service.
                {"matches": [{"grpc": {"service": GRPC_SERVICE}}], "backends": to("grpc-b")},
            ],
        )
    )
    stack.converge(
        "route PUT -> Envoy routes gRPC by method",
        lambda: _call(grpc_channel, "Say") == (grpc.StatusCode.OK, "grpc-a:Say"),
    )
    # No ServicePolicy: the gRPC matches made the clusters HTTP/2.
    cluster = envoy_cluster(stack.envoy, "grpc-a")
    assert cluster is not None and "typed_extension_protocol_options" in cluster
    assert _call(grpc_channel, "Hello") == (grpc.StatusCode.OK, "grpc-b:Hello")

    # The first attempt is answered UNAVAILABLE; Envoy retries and the client sees success.
    flaky = stack.grpc["grpc-a"]
    assert _call(grpc_channel, "Flaky", b"retried") == (grpc.StatusCode.OK, "grpc-a:Flaky")
    assert flaky.flaky_attempts[b"retried"] == 2

    # A client deadline shorter than the server's delay.
    assert _call(grpc_channel, "Slow", timeout=0.3)[0] is grpc.StatusCode.DEADLINE_EXCEEDED
    # grpc_max caps what the client asks for: Envoy gives up after 100ms, long before the
    # client's 10 s deadline or the server's answer.
    code, details = _call(grpc_channel, "Slow", timeout=10.0)
    print("Slow with a 10 s deadline capped to 100ms by Envoy:", code, details)
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_grpc_without_retry_or_grpc_max(stack: Stack) -> None:
    """The counterparts: without a retry the client sees the first attempt's UNAVAILABLE;
    without ``grpc_max`` the slow call succeeds (nothing caps it)."""
    stack.api.put(
        route(
            "grpc-slow",
            ["grpc-slow.test"],
            [{"matches": [{"grpc": {"service": GRPC_SERVICE}}], "backends": to("grpc-b")}],
        )
    )
    with grpc.insecure_channel(
        f"127.0.0.1:{stack.traffic.port}", options=[("grpc.default_authority", "grpc-slow.test")]
    ) as channel:
        stack.converge(
            "route PUT -> Envoy routes grpc-slow.test",
            lambda: _call(channel, "Say") == (grpc.StatusCode.OK, "grpc-b:Say"),
        )
        assert _call(channel, "Flaky", b"once")[0] is grpc.StatusCode.UNAVAILABLE
        assert stack.grpc["grpc-b"].flaky_attempts[b"once"] == 1
        assert _call(channel, "Slow", timeout=10.0) == (grpc.StatusCode.OK, "grpc-b:Slow")


# -- CORS -----------------------------------------------------------------------------------


def _preflight(stack: Stack, origin: str, method: str = "PUT") -> httpx.Response:
    return stack.traffic.http.options(
        "/items",
        headers={
            "host": "cors.test",
            "origin": origin,
            "access-control-request-method": method,
        },
    )


def test_cors_preflights_from_allowed_origins_only(stack: Stack) -> None:
    cors = {
        "allow_origins": [
            {"exact": "https://shop.example"},
            {"regex": r"https://[a-z]+\.partner\.example"},
        ],
        "allow_methods": ["GET", "PUT"],
        "allow_headers": ["x-token"],
        "expose_headers": ["x-upstream"],
        "max_age": "60s",
    }
    stack.api.put(
        route("cors", ["cors.test"], [{"backends": to("web"), "filters": {"cors": cors}}])
    )
    stack.converge(
        "route PUT -> Envoy answers preflights",
        lambda: "access-control-allow-origin" in _preflight(stack, "https://shop.example").headers,
    )
    for origin in ("https://shop.example", "https://acme.partner.example"):
        answer = _preflight(stack, origin)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == origin
        assert answer.headers["access-control-allow-methods"] == "GET,PUT"
        assert answer.headers["access-control-allow-headers"] == "x-token"
        assert answer.headers["access-control-max-age"] == "60"
    for origin in ("https://evil.example", "https://shop.example.evil", "http://shop.example"):
        answer = _preflight(stack, origin)
        assert "access-control-allow-origin" not in answer.headers, origin
        assert "access-control-allow-methods" not in answer.headers, origin
    # An actual request from an allowed origin is tagged; its exposed header listed.
    simple = stack.traffic.get("cors.test", headers={"origin": "https://shop.example"})
    assert simple.text == "web-1"
    assert simple.headers["access-control-allow-origin"] == "https://shop.example"
    assert simple.headers["access-control-expose-headers"] == "x-upstream"


# -- Fault injection ------------------------------------------------------------------------


def test_fault_aborts_half_the_requests(stack: Stack) -> None:
    fault = {"abort": {"http_status": 503, "percent": 50}}
    stack.api.put(route("abort", ["abort.test"], [{"backends": to("faulty"), "fault": fault}]))
    stack.converge(
        "route PUT -> Envoy aborts some requests",
        lambda: stack.traffic.get("abort.test").status_code == 503,
    )
    statuses = Counter(stack.traffic.get("abort.test").status_code for _ in range(400))
    print("400 requests, abort 50 %:", dict(statuses))
    assert set(statuses) == {200, 503}
    assert abs(statuses[503] / 400 * 100 - 50) <= 7


def test_fault_delays_requests(stack: Stack) -> None:
    fault = {"delay": {"duration": "200ms", "percent": 100}}
    stack.api.put(route("delay", ["delay.test"], [{"backends": to("faulty"), "fault": fault}]))
    stack.api.put(route("no-delay", ["no-delay.test"], [{"backends": to("faulty")}]))

    def delayed() -> bool:
        started = time.monotonic()
        return stack.traffic.body("delay.test") == "faulty-1" and time.monotonic() - started >= 0.2

    stack.converge("route PUT -> Envoy delays requests", delayed)
    stack.converge(
        "route PUT -> Envoy routes no-delay.test",
        lambda: stack.traffic.body("no-delay.test") == "faulty-1",
    )
    injected = stack.envoy.stat("http.public.fault.delays_injected")
    took, plain = [], []
    for _ in range(5):
        started = time.monotonic()
        assert stack.traffic.body("delay.test") == "faulty-1"
        took.append(time.monotonic() - started)
        started = time.monotonic()
        assert stack.traffic.body("no-delay.test") == "faulty-1"
        plain.append(time.monotonic() - started)
    print("delayed requests took (s):", [round(t, 3) for t in took])
    print("undelayed requests took (s):", [round(t, 3) for t in plain])
    # Envoy counts each delay it injects; the client sees about 200 ms more than on the
    # route without a fault (Envoy's timer may fire a millisecond or two early, so the
    # client's clock is given a 5 % margin).
    assert stack.envoy.stat("http.public.fault.delays_injected") - injected == 5
    assert min(took) >= 0.19
    assert min(took) - max(plain) >= 0.15


def test_fault_only_with_the_header(stack: Stack) -> None:
    fault = {
        "abort": {"http_status": 418, "percent": 100},
        "header": {"name": "x-chaos", "exact": "on"},
    }
    stack.api.put(route("chaos", ["chaos.test"], [{"backends": to("faulty"), "fault": fault}]))
    stack.converge(
        "route PUT -> Envoy aborts requests with the header",
        lambda: stack.traffic.get("chaos.test", headers={"x-chaos": "on"}).status_code == 418,
    )
    for _ in range(20):
        assert stack.traffic.get("chaos.test", headers={"x-chaos": "on"}).status_code == 418
        assert stack.traffic.get("chaos.test").status_code == 200
        assert stack.traffic.get("chaos.test", headers={"x-chaos": "off"}).status_code == 200


# -- Cookie affinity ------------------------------------------------------------------------


def _sticky_policy(policy: str) -> dict[str, Any]:
    return {
        "kind": "ServicePolicy",
        "name": "sticky",
        "spec": {
            "load_balancing": {
                "policy": policy,
                "hash_policies": [{"cookie": {"name": "affinity", "ttl": "3600s", "path": "/"}}],
            }
        },
    }


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_cookie_affinity(stack: Stack, policy: str) -> None:
    stack.api.apply(
        [_sticky_policy(policy), route("sticky", ["sticky.test"], [{"backends": to("sticky")}])]
    )
    stack.converge(
        f"apply -> Envoy's cluster uses {policy}",
        lambda: (envoy_cluster(stack.envoy, "sticky") or {}).get("lb_policy") == policy.upper(),
    )
    url = f"http://127.0.0.1:{stack.traffic.port}/"

    def fresh_client_lands() -> tuple[str, str | None]:
        """A new client (no cookie, a new connection): where it lands, the cookie it gets."""
        with httpx.Client(headers={"host": "sticky.test"}) as client:
            answer = client.get(url)
            return answer.text, answer.cookies.get("affinity")

    stack.converge(
        "apply -> Envoy sets the affinity cookie", lambda: fresh_client_lands()[1] is not None
    )
    # Without the cookie, clients spread over the instances.
    fresh = [fresh_client_lands() for _ in range(40)]
    spread = Counter(instance for instance, _ in fresh)
    print(f"{policy}: 40 clients without the cookie:", dict(spread))
    assert len(spread) > 1
    assert all(cookie for _, cookie in fresh)
    # A client keeping its cookie stays on one instance; each new connection sends it.
    with httpx.Client(headers={"host": "sticky.test"}) as client:
        first = client.get(url)
        assert client.cookies.get("affinity")
        landed = Counter([first.text])
        for _ in range(99):
            landed[client.get(url, headers={"connection": "close"}).text] += 1
    print(f"{policy}: 100 requests keeping the cookie:", dict(landed))
    assert len(landed) == 1 and sum(landed.values()) == 100
    assert next(iter(landed)).startswith("sticky-")


# -- Examples -------------------------------------------------------------------------------


@pytest.mark.parametrize("file", ["grpc-route.yaml", "websocket-cors-route.yaml"])
def test_http_feature_examples_are_accepted_by_envoy(file: str) -> None:
    """The examples, with the listener and retry policy they build on, validate and are
    accepted by ``envoy --mode validate``."""
    raws = [
        raw
        for name in ("listener.yaml", "retry-policy.yaml", file)
        for raw in yaml.safe_load_all((EXAMPLES / name).read_text())
    ]
    config = config_of(raws)
    inventory = Inventory.of(
        {name: Service(name, (Endpoint("10.0.0.1", 80),)) for name in ("api", "web", "echo")}
    )
    assert validate_config(config, inventory).ok
    assert_envoy_accepts(translate(inventory, config), f"api/examples/{file}")
