from __future__ import annotations

import pytest

from tests.unit.model_builders import error_at, listener
from xds_server.model import ListenerDocument, ListenerSpec, parse_document
from xds_server.model.listener import ListenerProtocol


def listener_spec(**spec: object) -> ListenerSpec:
    parsed = parse_document(listener(**spec))  # type: ignore[arg-type]
    assert isinstance(parsed, ListenerDocument)
    return parsed.spec


def test_defaults() -> None:
    spec = listener_spec(port=80)
    assert spec.address == "0.0.0.0"
    assert spec.protocol is ListenerProtocol.HTTP
    assert spec.groups == ()
    assert spec.access_log is True
    assert spec.http.use_remote_address is False
    assert spec.http.xff_num_trusted_hops == 0
    assert spec.delivered_to("anything")


def test_all_fields() -> None:
    spec = listener_spec(
        address="::1",
        port=443,
        protocol="http",
        groups=["edge", "internal"],
        access_log=False,
        http={
            "idle_timeout": "5m",
            "max_request_headers_kb": 96,
            "use_remote_address": True,
            "xff_num_trusted_hops": 2,
        },
    )
    assert spec.address == "::1"
    assert spec.delivered_to("edge") and not spec.delivered_to("other")
    assert str(spec.http.idle_timeout) == "5m"


def test_ipv6_address_is_canonicalised() -> None:
    assert listener_spec(address="0:0:0:0:0:0:0:1").address == "::1"


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"port": 0}, "spec.port", "greater than or equal to 1"),
        ({"port": 65536}, "spec.port", "less than or equal to 65535"),
        ({"address": "localhost"}, "spec.address", "not an IPv4 or IPv6 address"),
        ({"address": "fe80::1%eth0"}, "spec.address", "not an IPv4 or IPv6 address"),
        ({"protocol": "udp"}, "spec.protocol", "'http'"),
        ({"groups": ["a", "a"]}, "spec.groups", "more than once: a"),
        ({"groups": ["bad group"]}, "spec.groups[0]", "not a valid proxy group name"),
        ({"access_log": "loud"}, "spec.access_log", "boolean"),
        ({"http": {"max_request_headers_kb": 0}}, "spec.http.max_request_headers_kb", ">= 1"),
        ({"http": {"max_request_headers_kb": 8193}}, "spec.http.max_request_headers_kb", "8192"),
        ({"http": {"xff_num_trusted_hops": -1}}, "spec.http.xff_num_trusted_hops", "0"),
        ({"http": {"idle_timeout": "soon"}}, "spec.http.idle_timeout", "not a valid duration"),
        ({"http": {"idle": "5s"}}, "spec.http.idle", "Extra inputs are not permitted"),
        ({"prot": 80}, "spec.prot", "Extra inputs are not permitted"),
    ],
)
def test_invalid(spec: dict[str, object], field: str, reason: str) -> None:
    raw = listener(**{"port": 8080, **spec})  # type: ignore[arg-type]
    message = error_at(raw, field)
    assert reason.replace(">= ", "greater than or equal to ") in message


def test_missing_port() -> None:
    assert "Field required" in error_at({"kind": "Listener", "name": "x", "spec": {}}, "spec.port")
