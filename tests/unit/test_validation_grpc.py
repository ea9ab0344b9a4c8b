"""What proxyless gRPC clients cannot honour on a target they use is accepted with a warning
naming the feature and the client type (``model.validation_grpc``), never refused."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.model_builders import config_of, doc, inventory_of, listener
from xds_server.model import Inventory
from xds_server.model.validation import validate_config

INVENTORY = inventory_of(echo=2, other=1)


def route_rules(*rules: dict[str, Any], hostnames: tuple[str, ...] = ("echo",)) -> dict[str, Any]:
    return doc("Route", "r", listeners=["public"], hostnames=list(hostnames), rules=list(rules))


TO_ECHO = {"backends": [{"service": "echo"}]}


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({"filters": {"redirect": {"path": "/new"}}}, "spec.rules[0].filters.redirect", "redirect"),
        (
            {**TO_ECHO, "matches": [{"query_params": [{"name": "q", "present": True}]}]},
            "spec.rules[0].matches[0].query_params",
            "query parameter",
        ),
        ({**TO_ECHO, "matches": [{"method": "GET"}]}, "spec.rules[0].matches[0].method", "POST"),
        (
            {**TO_ECHO, "rate_limit": {"policy": "limits"}},
            "spec.rules[0].rate_limit",
            "rate limits",
        ),
        (
            {**TO_ECHO, "retry": {"retry_on": ["5xx"], "num_retries": 2}},
            "spec.rules[0].retry",
            "5xx ignored",
        ),
        (
            {**TO_ECHO, "retry": {"retry_on": ["unavailable"], "num_retries": 7}},
            "spec.rules[0].retry.num_retries",
            "at most 4",
        ),
        (
            {**TO_ECHO, "filters": {"request_headers": {"set": {"x-a": "1"}}}},
            "spec.rules[0].filters.request_headers",
            "not applied",
        ),
    ],
)
def test_route_features_grpc_cannot_honour_warn(
    rule: dict[str, Any], field: str, words: str
) -> None:
    report = validate_config(config_of(listener(), route_rules(rule)), INVENTORY)
    assert not [e for e in report.errors if "gRPC" in e.reason]  # never refused for gRPC
    [warning] = [w for w in report.warnings if "gRPC" in w.reason]
    assert (warning.kind, warning.name, warning.field) == ("Route", "r", field)
    assert words in warning.reason and "proxyless gRPC clients of xds:///echo" in warning.reason


def test_a_load_balancing_policy_grpc_nacks_warns_on_the_service_policy() -> None:
    policy = doc("ServicePolicy", "echo", load_balancing={"policy": "least_request"})
    [warning] = validate_config(config_of(policy), INVENTORY).warnings
    assert warning.field == "spec.load_balancing.policy"
    assert "least_request" in warning.reason and "proxyless gRPC clients" in warning.reason


def test_cookie_hashing_warns_and_header_hashing_does_not() -> None:
    policy = doc(
        "ServicePolicy",
        "echo",
        load_balancing={
            "policy": "ring_hash",
            "hash_policies": [{"header": "x-user"}, {"cookie": {"name": "c"}}],
        },
    )
    warnings = validate_config(config_of(policy), INVENTORY).warnings
    assert [w.field for w in warnings] == ["spec.load_balancing.hash_policies[1]"]


def test_no_warning_for_what_grpc_honours_or_for_hosts_that_are_no_target() -> None:
    honoured = {
        **TO_ECHO,
        "matches": [{"grpc": {"service": "pkg.Echo"}, "headers": [{"name": "x", "exact": "1"}]}],
        "retry": {"retry_on": ["unavailable"], "num_retries": 3},
        "timeouts": {"request": "1s"},
    }
    clean = validate_config(config_of(listener(), route_rules(honoured)), INVENTORY)
    assert clean.ok and clean.warnings == []
    redirect = {"filters": {"redirect": {"path": "/new"}}}
    elsewhere = route_rules(redirect, hostnames=("example.com",))
    assert validate_config(config_of(listener(), elsewhere), INVENTORY).warnings == []
    unsynced = Inventory(synced=False)
    assert not any(
        "gRPC" in w.reason
        for w in validate_config(config_of(listener(), route_rules(redirect)), unsynced).warnings
    )


def test_outlier_detection_warns_it_is_not_applied() -> None:
    policy = doc("ServicePolicy", "echo", outlier_detection={"consecutive_5xx": 5})
    [warning] = validate_config(config_of(policy), INVENTORY).warnings
    assert warning.field == "spec.outlier_detection" and "gRPC" in warning.reason
