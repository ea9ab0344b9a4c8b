"""WebSocket upgrades, gRPC matches, CORS and fault injection: what the API refuses (422
naming the field, nothing stored), what it accepts, and what translation makes of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from tests.unit.admin_harness import (
    Api,
    assert_problem,
    listener,
    new_store,
    reason_at,
    route,
    running_api,
)
from xds_server.model.config import Entry
from xds_server.model.listener import ListenerSpec
from xds_server.model.route import Match, RouteSpec, Rule
from xds_server.model.service_policy import ServicePolicySpec, UpstreamProtocol
from xds_server.translate.cors import CORS
from xds_server.translate.edge import EdgeFilters, rule_features
from xds_server.translate.faults import FAULT
from xds_server.translate.grpc import grpc_services, implied_policy
from xds_server.translate.listeners import listener as envoy_listener
from xds_server.translate.matches import route_match
from xds_server.translate.precedence import Position, sort_key
from xds_server.translate.routes import envoy_routes


@pytest.fixture(params=["memory", "sqlite"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(new_store(request.param, tmp_path)) as running:
        await running.put("listeners/public", listener())
        yield running


async def refused(api: Api, path: str, document: dict[str, Any]) -> dict[str, Any]:
    before = await api.revision()
    problem = assert_problem(await api.put(path, document), 422)
    assert await api.revision() == before
    return problem


def rule(**fields: Any) -> dict[str, Any]:
    return {"backends": [{"service": "web"}], **fields}


REFUSED = [
    pytest.param(
        rule(fault={"abort": {"http_status": 503, "percent": 100.5}}),
        "spec.rules[0].fault.abort.percent",
        "less than or equal to 100",
        id="abort-percent-over-100",
    ),
    pytest.param(
        rule(fault={"delay": {"duration": "1s", "percent": -1}}),
        "spec.rules[0].fault.delay.percent",
        "greater than or equal to 0",
        id="delay-percent-negative",
    ),
    pytest.param(
        rule(fault={"abort": {"http_status": 600}}),
        "spec.rules[0].fault.abort.http_status",
        "599",
        id="abort-http-status",
    ),
    pytest.param(
        rule(fault={"abort": {"grpc_status": 17}}),
        "spec.rules[0].fault.abort.grpc_status",
        "16",
        id="abort-grpc-status",
    ),
    pytest.param(
        rule(fault={"abort": {"http_status": 503, "grpc_status": 14}}),
        "spec.rules[0].fault.abort",
        "exactly one of http_status, grpc_status",
        id="abort-both-statuses",
    ),
    pytest.param(
        rule(fault={"header": {"name": "x-chaos"}}),
        "spec.rules[0].fault",
        "delay, abort or both",
        id="fault-without-fault",
    ),
    pytest.param(
        rule(fault={"delay": {"duration": "0s"}}),
        "spec.rules[0].fault.delay.duration",
        "",
        id="delay-zero",
    ),
    pytest.param(
        rule(filters={"cors": {"allow_origins": [{"regex": "https://(?=x)"}]}}),
        "spec.rules[0].filters.cors.allow_origins[0].regex",
        "invalid perl operator: (?=",
        id="cors-regex-re2-rejects",
    ),
    pytest.param(
        rule(filters={"cors": {"allow_origins": []}}),
        "spec.rules[0].filters.cors.allow_origins",
        "",
        id="cors-no-origins",
    ),
    pytest.param(
        rule(filters={"cors": {"allow_origins": [{"exact": "a", "prefix": "b"}]}}),
        "spec.rules[0].filters.cors.allow_origins[0]",
        "exactly one of exact, prefix, regex",
        id="cors-origin-two-kinds",
    ),
    pytest.param(
        rule(filters={"cors": {"allow_origins": [{"exact": "*"}], "allow_methods": ["FETCH"]}}),
        "spec.rules[0].filters.cors.allow_methods[0]",
        "",
        id="cors-unknown-method",
    ),
    pytest.param(
        rule(matches=[{"path": {"prefix": "/"}, "grpc": {"service": "pkg.Echo"}}]),
        "spec.rules[0].matches[0]",
        "at most one of path and grpc",
        id="grpc-and-path",
    ),
    pytest.param(
        rule(matches=[{"grpc": {"service": "9pkg.Echo"}}]),
        "spec.rules[0].matches[0].grpc.service",
        "not a gRPC service name",
        id="grpc-service-digit",
    ),
    pytest.param(
        rule(matches=[{"grpc": {"service": "pkg/Echo"}}]),
        "spec.rules[0].matches[0].grpc.service",
        "not a gRPC service name",
        id="grpc-service-slash",
    ),
    pytest.param(
        rule(matches=[{"grpc": {"service": "pkg..Echo"}}]),
        "spec.rules[0].matches[0].grpc.service",
        "not a gRPC service name",
        id="grpc-service-empty-part",
    ),
    pytest.param(
        rule(matches=[{"grpc": {"service": "pkg.Echo", "method": "Say.Hi"}}]),
        "spec.rules[0].matches[0].grpc.method",
        "not a gRPC method name",
        id="grpc-method-dot",
    ),
    pytest.param(
        rule(upgrades=["h2c"]),
        "spec.rules[0].upgrades[0]",
        "websocket",
        id="upgrade-unknown",
    ),
    pytest.param(
        rule(upgrades=["websocket", "websocket"]),
        "spec.rules[0].upgrades",
        "more than once",
        id="upgrade-twice",
    ),
    pytest.param(
        {"filters": {"redirect": {"path": "/x"}}, "upgrades": ["websocket"]},
        "spec.rules[0]",
        "upgrades",
        id="upgrade-on-redirect",
    ),
    pytest.param(
        rule(timeouts={"grpc_max": "soon"}),
        "spec.rules[0].timeouts.grpc_max",
        "",
        id="grpc-max-not-a-duration",
    ),
    pytest.param(
        rule(retry={"retry_on": ["unavailable", "aborted"]}),
        "spec.rules[0].retry.retry_on[1]",
        "",
        id="retry-on-unknown-grpc-status",
    ),
]


@pytest.mark.parametrize(("rule_", "field", "reason"), REFUSED)
async def test_bad_http_features_are_refused(
    api: Api, rule_: dict[str, Any], field: str, reason: str
) -> None:
    problem = await refused(api, "routes/web", route(rules=[rule_]))
    assert reason in reason_at(problem, field)


async def test_an_unknown_listener_upgrade_is_refused(api: Api) -> None:
    problem = await refused(
        api, "listeners/ws", listener("ws", 8081, http={"upgrades": ["spdy/3"]})
    )
    assert "websocket" in reason_at(problem, "spec.http.upgrades[0]")


async def test_every_feature_together_is_stored(api: Api) -> None:
    doc = route(
        rules=[
            rule(
                matches=[{"grpc": {"service": "pkg.v1.Echo", "method": "Say"}}],
                timeouts={"grpc_max": "5s"},
                retry={"retry_on": ["unavailable", "deadline-exceeded", "resource-exhausted"]},
                fault={
                    "delay": {"duration": "200ms", "percent": 12.5},
                    "abort": {"grpc_status": 14, "percent": 0},
                    "header": {"name": "x-chaos", "exact": "on"},
                },
            ),
            rule(
                upgrades=["websocket"],
                filters={
                    "cors": {
                        "allow_origins": [{"prefix": "https://"}, {"regex": r"https://.*\.x"}],
                        "allow_methods": ["GET"],
                        "allow_credentials": True,
                        "max_age": "1h",
                    }
                },
            ),
        ]
    )
    answer = await api.put("routes/web", doc)
    assert answer.status_code in (200, 201), answer.text
    stored = (await api.client.get("/v1/routes/web")).json()["spec"]["rules"]
    assert stored[0]["matches"][0]["grpc"] == {"service": "pkg.v1.Echo", "method": "Say"}
    assert stored[0]["fault"]["delay"]["percent"] == 12.5
    assert stored[1]["upgrades"] == ["websocket"]
    assert stored[1]["filters"]["cors"]["allow_credentials"] is True
    ws = await api.put("listeners/ws", listener("ws", 8081, http={"upgrades": ["websocket"]}))
    assert ws.status_code in (200, 201), ws.text


# -- translation ----------------------------------------------------------------------------


def _route_entry(*rules: dict[str, Any]) -> Entry[RouteSpec]:
    spec = RouteSpec.model_validate({"listeners": ["public"], "rules": list(rules)})
    return Entry("web", spec, 1)


def _as_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
    return result


def test_grpc_matches_become_paths() -> None:
    method = Match.model_validate({"grpc": {"service": "pkg.Echo", "method": "Say"}})
    service = Match.model_validate({"grpc": {"service": "pkg.Echo"}})
    assert _as_dict(route_match(method)) == {"path": "/pkg.Echo/Say"}
    assert _as_dict(route_match(service)) == {"path_separated_prefix": "/pkg.Echo"}
    # Precedence: the method's exact path before the service's prefix.
    position = Position((0, 0), 1, "r", 0, 0)
    assert sort_key(position, method) < sort_key(position, service)


def test_grpc_rules_imply_http2_for_their_services() -> None:
    rules = [
        Rule.model_validate({"matches": [{"grpc": {"service": "a.B"}}], "backends": to("g")}),
        Rule.model_validate({"backends": to("plain")}),
    ]
    grpc = grpc_services(rules)
    assert grpc == {"g"}
    implied = implied_policy("g", None, grpc)
    assert implied is not None and implied.protocol is UpstreamProtocol.GRPC
    assert implied_policy("plain", None, grpc) is None
    http2 = ServicePolicySpec(protocol=UpstreamProtocol.HTTP2)
    assert implied_policy("g", http2, grpc) is http2
    explicit = implied_policy("g", ServicePolicySpec(connect_timeout="1s"), grpc)  # type: ignore[arg-type]
    assert explicit is not None and explicit.protocol is UpstreamProtocol.GRPC
    assert explicit.connect_timeout.milliseconds == 1000


def to(service: str) -> list[dict[str, Any]]:
    return [{"service": service}]


def test_rule_features_put_filters_and_upgrades_on_the_listener() -> None:
    entry = _route_entry(
        rule(upgrades=["websocket"], filters={"cors": {"allow_origins": [{"exact": "https://a"}]}}),
        rule(fault={"abort": {"http_status": 503, "percent": 50}}),
    )
    features = rule_features(entry.spec.rules)
    spec = ListenerSpec(port=8080)
    manager = _as_dict(envoy_listener("public", spec, None, EdgeFilters(features=features)))
    hcm = manager["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == [
        CORS,
        FAULT,
        "envoy.filters.http.router",
    ]
    # The listener does not allow WebSocket itself: listed, disabled; the rule enables it.
    assert hcm["upgrade_configs"] == [{"upgrade_type": "websocket", "enabled": False}]
    routes = envoy_routes(entry, {}, {})
    first, second = (_as_dict(r.message) for r in routes)
    assert first["route"]["upgrade_configs"] == [{"upgrade_type": "websocket", "enabled": True}]
    assert set(first["typed_per_filter_config"]) == {CORS}
    assert second["typed_per_filter_config"][FAULT]["abort"] == {
        "http_status": 503,
        "percentage": {"numerator": 500000, "denominator": "MILLION"},
    }
    # A listener allowing WebSocket lists it enabled; no rule feature, no extra filter.
    allowing = ListenerSpec.model_validate({"port": 8080, "http": {"upgrades": ["websocket"]}})
    plain = _as_dict(envoy_listener("public", allowing))
    hcm = plain["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["upgrade_configs"] == [{"upgrade_type": "websocket", "enabled": True}]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]


def test_grpc_max_bounds_the_grpc_timeout_header() -> None:
    entry = _route_entry(rule(timeouts={"grpc_max": "2s"}))
    action = _as_dict(envoy_routes(entry, {}, {})[0].message)["route"]
    assert action["max_stream_duration"] == {"grpc_timeout_header_max": "2s"}


def test_edge_only_rule_features_on_mesh_routes_are_warned_about() -> None:
    from xds_server.model import Config, Inventory
    from xds_server.model.validation import validate_config

    rule = {
        "backends": [{"service": "api"}],
        "fault": {"abort": {"http_status": 503, "percent": 10}},
        "filters": {"cors": {"allow_origins": [{"exact": "https://a.example.com"}]}},
    }
    config = Config.from_documents(
        [
            ("Route", "calls", {"upstreams": ["api"], "rules": [rule]}, 1),
            ("Route", "edge", {"listeners": ["l"], "rules": [rule]}, 2),
            ("Listener", "l", {"port": 8080}, 3),
        ]
    )
    warnings = validate_config(config, Inventory(synced=False)).warnings
    found = sorted((w.name, w.field) for w in warnings if "sidecars' calls" in w.reason)
    assert found == [("calls", "spec.rules[0].fault"), ("calls", "spec.rules[0].filters.cors")]
