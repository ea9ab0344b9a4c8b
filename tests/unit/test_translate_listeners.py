from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2

from tests.unit.model_builders import config_of, listener
from tests.unit.translate_helpers import as_dict, connection_manager, default_resources


def translated(**spec: object) -> tuple[dict, dict]:  # type: ignore[type-arg]
    (result,) = default_resources(config_of(listener("public", 8080, **spec))).listeners
    assert isinstance(result, listener_pb2.Listener)
    return as_dict(result), as_dict(connection_manager(result))


def test_listener_basics() -> None:
    envoy_listener, manager = translated()
    assert envoy_listener["name"] == "public"
    assert envoy_listener["address"] == {
        "socket_address": {"address": "0.0.0.0", "port_value": 8080}
    }
    (network_filter,) = envoy_listener["filter_chains"][0]["filters"]
    assert network_filter["name"] == "envoy.filters.network.http_connection_manager"
    assert manager["stat_prefix"] == "public"
    assert manager["rds"] == {
        "config_source": {"ads": {}, "resource_api_version": "V3"},
        "route_config_name": "public",
    }
    (router,) = manager["http_filters"]
    assert router["name"] == "envoy.filters.http.router"
    assert router["typed_config"]["@type"].endswith(
        "envoy.extensions.filters.http.router.v3.Router"
    )


def test_json_access_log_to_stdout() -> None:
    _, manager = translated()
    (access_log,) = manager["access_log"]
    assert access_log["name"] == "envoy.access_loggers.stdout"
    assert access_log["typed_config"]["@type"].endswith("StdoutAccessLog")
    json_format = access_log["typed_config"]["log_format"]["json_format"]
    assert json_format["response_code"] == "%RESPONSE_CODE%"
    assert json_format["listener"] == "public"


def test_access_log_can_be_turned_off() -> None:
    _, manager = translated(access_log=False)
    assert "access_log" not in manager


def test_http_options() -> None:
    _, manager = translated(
        address="::",
        http={
            "idle_timeout": "5m",
            "max_request_headers_kb": 96,
            "use_remote_address": True,
            "xff_num_trusted_hops": 2,
        },
    )
    assert manager["common_http_protocol_options"] == {"idle_timeout": "300s"}
    assert manager["max_request_headers_kb"] == 96
    assert manager["use_remote_address"] is True
    assert manager["xff_num_trusted_hops"] == 2


def test_http_defaults_leave_envoy_defaults() -> None:
    _, manager = translated()
    for field in (
        "common_http_protocol_options",
        "max_request_headers_kb",
        "use_remote_address",
        "xff_num_trusted_hops",
    ):
        assert field not in manager


def test_virtual_hosts_match_the_host_without_its_port() -> None:
    # "Host: shop.example.com:10000" must reach a route for "shop.example.com".
    _, manager = translated()
    assert manager["strip_any_host_port"] is True
