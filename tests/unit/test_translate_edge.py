"""Edge policies and telemetry -> Envoy filters, per-route configs and clusters."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from xds_server.model import Config, Inventory
from xds_server.model.inventory import Endpoint, Service
from xds_server.translate import translate


def doc(kind: str, name: str, **spec: Any) -> tuple[str, str, dict[str, Any], int]:
    return (kind, name, spec, 0)


def resources() -> Any:
    config = Config.from_documents(
        [
            doc("Listener", "public", port=80, telemetry={"tracing": {"collector": "otel:4317"}}),
            doc("Listener", "plain", port=81),
            doc("Listener", "stats", port=82, metrics={}),
            doc(
                "AuthPolicy",
                "sso",
                listeners=["public"],
                providers=[{"name": "idp", "jwks": {"url": "http://10.0.0.7:8080/jwks"}}],
            ),
            doc("RateLimitPolicy", "rl", requests=5),
            doc(
                "Route",
                "web",
                listeners=["public", "plain"],
                rules=[
                    {
                        "matches": [{"path": {"exact": "/health"}}],
                        "backends": [{"service": "web"}],
                        "auth": {"disabled": True},
                    },
                    {
                        "backends": [{"service": "web"}],
                        "rate_limit": {"policy": "rl"},
                        "auth": {
                            "claims": [{"claim": "scope", "contains": "read"}],
                            "policy": "sso",
                        },
                    },
                ],
            ),
        ]
    )
    inventory = Inventory.of({"web": Service("web", (Endpoint("10.0.0.1", 80),))})
    return translate(inventory, config).default


def filters_of(listener: Any) -> list[str]:
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return [f.name for f in manager.http_filters]


def test_filters_clusters_and_per_route_configs() -> None:
    result = resources()
    listeners = {lis.name: lis for lis in result.listeners}
    assert isinstance(listeners["public"], listener_pb2.Listener)
    assert filters_of(listeners["public"]) == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.router",
    ]
    # plain: the routes' per-rule configs need the filters; no default requirement there.
    assert filters_of(listeners["plain"])[:3] == filters_of(listeners["public"])[:3]
    assert filters_of(listeners["stats"]) == ["envoy.filters.http.router"]
    clusters = {c.name: c for c in result.clusters}
    assert [c.name for c in result.clusters] == sorted(clusters)
    assert set(clusters) == {"jwks/sso/idp", "metrics/stats", "tracing/public", "web"}
    assert clusters["jwks/sso/idp"].type == cluster_pb2.Cluster.STATIC
    assert clusters["tracing/public"].type == cluster_pb2.Cluster.STRICT_DNS
    routes = {r.name: r for r in result.routes}
    assert isinstance(routes["public"], route_pb2.RouteConfiguration)
    envoy_routes = {r.name: r for r in routes["public"].virtual_hosts[0].routes}
    health = jwt_pb2.PerRouteConfig()
    envoy_routes["web.rules[0].matches[0]"].typed_per_filter_config[
        "envoy.filters.http.jwt_authn"
    ].Unpack(health)
    assert health.disabled
    limited = envoy_routes["web.rules[1].matches[0]"].typed_per_filter_config
    assert set(limited) == {
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac",
        "envoy.filters.http.local_ratelimit",
    }
    bucket = local_rate_limit_pb2.LocalRateLimit()
    limited["envoy.filters.http.local_ratelimit"].Unpack(bucket)
    assert bucket.token_bucket.max_tokens == 5
    stats = routes["stats"].virtual_hosts[0].routes[0]
    assert (stats.match.path, stats.route.prefix_rewrite) == ("/metrics", "/stats/prometheus")


def test_rate_limit_response_header_values_are_literal() -> None:
    """Envoy reads ``%`` in an added header value as a command operator; a value is literal."""
    config = Config.from_documents(
        [
            doc("Listener", "public", port=80),
            doc(
                "RateLimitPolicy",
                "rl",
                listeners=["public"],
                requests=1,
                response_headers={"x-limit": "100% used", "x-host": "%HOSTNAME%"},
            ),
            doc("Route", "web", listeners=["public"], rules=[{"backends": [{"service": "web"}]}]),
        ]
    )
    inventory = Inventory.of({"web": Service("web", (Endpoint("10.0.0.1", 80),))})
    listener: Any = translate(inventory, config).default.listeners[0]
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    (limit,) = [f for f in manager.http_filters if f.name == "envoy.filters.http.local_ratelimit"]
    bucket = local_rate_limit_pb2.LocalRateLimit()
    limit.typed_config.Unpack(bucket)
    values = {h.header.key: h.header.value for h in bucket.response_headers_to_add}
    assert values == {"x-limit": "100%% used", "x-host": "%%HOSTNAME%%"}
