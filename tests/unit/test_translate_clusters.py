from __future__ import annotations

from typing import Any

from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from tests.unit.model_builders import config_of, doc, listener, route
from tests.unit.translate_helpers import as_dict, default_resources


def cluster_of(**policy: Any) -> Any:
    documents = [listener(), route()]
    if policy:
        documents.append(doc("ServicePolicy", "web", **policy))
    (cluster,) = default_resources(config_of(*documents)).clusters
    return cluster


def test_eds_cluster_named_after_the_service() -> None:
    cluster = as_dict(cluster_of())
    assert cluster == {
        "name": "web",
        "type": "EDS",
        "eds_cluster_config": {
            "eds_config": {"ads": {}, "resource_api_version": "V3"},
            "service_name": "web",
        },
        "connect_timeout": "5s",
    }


def test_load_balancing_and_connect_timeout() -> None:
    cluster = as_dict(
        cluster_of(load_balancing={"policy": "least_request"}, connect_timeout="250ms")
    )
    assert cluster["lb_policy"] == "LEAST_REQUEST"
    assert cluster["connect_timeout"] == "0.250s"
    for policy, envoy in [("ring_hash", "RING_HASH"), ("maglev", "MAGLEV"), ("random", "RANDOM")]:
        assert as_dict(cluster_of(load_balancing={"policy": policy}))["lb_policy"] == envoy


def test_circuit_breakers() -> None:
    cluster = as_dict(cluster_of(circuit_breakers={"max_connections": 100, "max_retries": 0}))
    assert cluster["circuit_breakers"] == {
        "thresholds": [{"max_connections": 100, "max_retries": 0}]
    }


def test_outlier_detection() -> None:
    cluster = as_dict(
        cluster_of(
            outlier_detection={
                "consecutive_5xx": 5,
                "interval": "10s",
                "base_ejection_time": "30s",
                "max_ejection_percent": 50,
            }
        )
    )
    assert cluster["outlier_detection"] == {
        "consecutive_5xx": 5,
        "interval": "10s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
    }


def test_health_check() -> None:
    cluster = as_dict(
        cluster_of(
            health_check={
                "path": "/healthz",
                "interval": "5s",
                "timeout": "2s",
                "unhealthy_threshold": 4,
                "healthy_threshold": 1,
                "expected_statuses": [200, "300-399"],
                "host": "web.internal",
            }
        )
    )
    (check,) = cluster["health_checks"]
    assert check["interval"] == "5s" and check["timeout"] == "2s"
    assert check["unhealthy_threshold"] == 4 and check["healthy_threshold"] == 1
    assert check["http_health_check"] == {
        "path": "/healthz",
        "host": "web.internal",
        # Envoy's ranges are half-open.
        "expected_statuses": [{"start": "200", "end": "201"}, {"start": "300", "end": "400"}],
    }


def test_http1_has_no_protocol_options() -> None:
    assert "typed_extension_protocol_options" not in as_dict(cluster_of(protocol="http1"))


def test_http2_and_grpc_upstreams() -> None:
    for protocol in ("http2", "grpc"):
        cluster = cluster_of(protocol=protocol, health_check={"path": "/h"})
        options = cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        unpacked = http_protocol_options_pb2.HttpProtocolOptions()
        assert options.Unpack(unpacked)
        assert unpacked.explicit_http_config.HasField("http2_protocol_options")
        check = as_dict(cluster)["health_checks"][0]["http_health_check"]
        assert check["codec_client_type"] == "HTTP2"
