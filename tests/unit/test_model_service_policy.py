from __future__ import annotations

import pytest

from tests.unit.model_builders import doc, error_at
from xds_server.model import ServicePolicySpec, parse_document
from xds_server.model.duration import Duration
from xds_server.model.service_policy import LbPolicy, StatusRange, UpstreamProtocol


def policy(**spec: object) -> ServicePolicySpec:
    parsed = parse_document(doc("ServicePolicy", "api", **spec)).spec
    assert isinstance(parsed, ServicePolicySpec)
    return parsed


def test_defaults() -> None:
    spec = policy()
    assert spec.load_balancing.policy is LbPolicy.ROUND_ROBIN
    assert spec.connect_timeout == Duration(5_000)
    assert spec.protocol is UpstreamProtocol.HTTP1
    assert spec.circuit_breakers is None
    assert spec.health_check is None


def test_hash_policies_with_ring_hash() -> None:
    spec = policy(
        load_balancing={
            "policy": "maglev",
            "hash_policies": [
                {"header": "x-user"},
                {"cookie": {"name": "session", "ttl": "1h", "path": "/"}},
                {"source_ip": True},
            ],
            "terminal": True,
        }
    )
    kinds = [
        (p.header, p.cookie.name if p.cookie else None, p.source_ip)
        for p in spec.load_balancing.hash_policies
    ]
    assert kinds == [("x-user", None, None), (None, "session", None), (None, None, True)]


def test_health_check_status_ranges() -> None:
    spec = policy(health_check={"path": "/healthz", "expected_statuses": [200, "300-399"]})
    assert spec.health_check is not None
    assert spec.health_check.expected_statuses == (StatusRange(200, 200), StatusRange(300, 399))
    dumped = spec.model_dump(mode="json")["health_check"]
    assert dumped["expected_statuses"] == [200, "300-399"]
    assert dumped["interval"] == "10s" and dumped["timeout"] == "1s"


def test_specs_are_hashable_for_caching() -> None:
    first = policy(circuit_breakers={"max_connections": 10})
    second = policy(circuit_breakers={"max_connections": 10})
    assert first == second and hash(first) == hash(second)


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        (
            {"load_balancing": {"policy": "round_robin", "hash_policies": [{"header": "x"}]}},
            "spec.load_balancing",
            "only apply with policy ring_hash or maglev",
        ),
        ({"load_balancing": {"policy": "fastest"}}, "spec.load_balancing.policy", "'maglev'"),
        (
            {"load_balancing": {"policy": "ring_hash", "hash_policies": [{}]}},
            "spec.load_balancing.hash_policies[0]",
            "exactly one of header, cookie or source_ip",
        ),
        (
            {
                "load_balancing": {
                    "policy": "ring_hash",
                    "hash_policies": [{"header": "x", "source_ip": True}],
                }
            },
            "spec.load_balancing.hash_policies[0]",
            "exactly one",
        ),
        (
            {"load_balancing": {"policy": "ring_hash", "hash_policies": [{"source_ip": False}]}},
            "spec.load_balancing.hash_policies[0].source_ip",
            "True",
        ),
        (
            {"load_balancing": {"policy": "ring_hash", "hash_policies": [{"cookie": {}}]}},
            "spec.load_balancing.hash_policies[0].cookie.name",
            "Field required",
        ),
        ({"connect_timeout": "0s"}, "spec.connect_timeout", "longer than 0s"),
        (
            {"circuit_breakers": {"max_connections": -1}},
            "spec.circuit_breakers.max_connections",
            "greater than or equal to 0",
        ),
        (
            {"circuit_breakers": {"max_connections": 2**32}},
            "spec.circuit_breakers.max_connections",
            "less than or equal to 4294967295",
        ),
        (
            {"outlier_detection": {"max_ejection_percent": 101}},
            "spec.outlier_detection.max_ejection_percent",
            "less than or equal to 100",
        ),
        (
            {"outlier_detection": {"interval": "0s"}},
            "spec.outlier_detection.interval",
            "longer than 0s",
        ),
        ({"health_check": {}}, "spec.health_check.path", "Field required"),
        ({"health_check": {"path": "healthz"}}, "spec.health_check.path", "must start with '/'"),
        (
            {"health_check": {"path": "/h", "timeout": "0s"}},
            "spec.health_check.timeout",
            "longer than 0s",
        ),
        (
            {"health_check": {"path": "/h", "unhealthy_threshold": 0}},
            "spec.health_check.unhealthy_threshold",
            "greater than or equal to 1",
        ),
        (
            {"health_check": {"path": "/h", "expected_statuses": ["299-200"]}},
            "spec.health_check.expected_statuses[0]",
            "start <= end",
        ),
        (
            {"health_check": {"path": "/h", "expected_statuses": [700]}},
            "spec.health_check.expected_statuses[0]",
            "100-599",
        ),
        (
            {"health_check": {"path": "/h", "expected_statuses": ["2xx"]}},
            "spec.health_check.expected_statuses[0]",
            "inclusive range",
        ),
        (
            {"health_check": {"path": "/h", "host": "Not A Host"}},
            "spec.health_check.host",
            "not a valid hostname",
        ),
        ({"protocol": "http3"}, "spec.protocol", "'grpc'"),
        ({"timeout": "1s"}, "spec.timeout", "Extra inputs are not permitted"),
    ],
)
def test_invalid(spec: dict[str, object], field: str, reason: str) -> None:
    assert reason in error_at(doc("ServicePolicy", "api", **spec), field)


def test_name_must_be_a_dns_label() -> None:
    assert "not a valid name" in error_at(doc("ServicePolicy", "API_v1"), "name")
