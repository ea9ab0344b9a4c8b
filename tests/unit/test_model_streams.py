"""``TcpRoute``/``TlsRoute`` and ``tcp``/``tls`` listeners: the model, the cross-document
checks, and what they translate to (``tcp_proxy`` chains, SNI matches, clusters and EDS)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from tests.unit.model_builders import config_of, doc, error_at, inventory_of, listener, route
from tests.unit.translate_helpers import default_resources, names
from xds_server.model import Config, Inventory, validate_config
from xds_server.model.listener import ListenerProtocol
from xds_server.translate import translate
from xds_server.translate.streams import TCP_ACCESS_LOG_FIELDS, TCP_PROXY


def tcp_route(
    name: str = "db", listeners: tuple[str, ...] = ("db",), **spec: Any
) -> dict[str, Any]:
    spec.setdefault("backends", [{"service": "db"}])
    return doc("TcpRoute", name, listeners=list(listeners), **spec)


def tls_route(
    name: str, hostnames: tuple[str, ...], listeners: tuple[str, ...] = ("sni",), **spec: Any
) -> dict[str, Any]:
    spec.setdefault("backends", [{"service": name}])
    return doc("TlsRoute", name, listeners=list(listeners), hostnames=list(hostnames), **spec)


TCP = listener("db", 5432, protocol="tcp")
TLS = listener("sni", 8443, protocol="tls")


def proxy_of(chain: Any) -> Any:
    (only,) = chain.filters
    assert only.name == TCP_PROXY
    proxy = tcp_proxy_pb2.TcpProxy()
    assert only.typed_config.Unpack(proxy)
    return proxy


def the_listener(config: Config, name: str, inventory: Inventory | None = None) -> Any:
    found = [m for m in default_resources(config, inventory).listeners if m.name == name]  # type: ignore[attr-defined]
    (one,) = found
    assert isinstance(one, listener_pb2.Listener)
    return one


def errors(config: Config) -> list[tuple[str, str, str]]:
    return [(p.kind, p.field, p.reason) for p in validate_config(config, Inventory()).errors]


# -- The model -----------------------------------------------------------------------------


def test_listener_protocols_tcp_and_tls_are_streams() -> None:
    assert ListenerProtocol.TCP.is_stream and ListenerProtocol.TLS.is_stream
    assert not ListenerProtocol.HTTP.is_stream and not ListenerProtocol.HTTPS.is_stream


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"tls_policy": "edge"}, "tls_policy"),
        ({"http": {"xff_num_trusted_hops": 1}}, "http"),
        ({"https_redirect": True}, "https_redirect"),
        ({"https_redirect_port": 8443}, "https_redirect"),
        ({"metrics": {}}, "metrics"),
        ({"telemetry": {"request_id": False}}, "telemetry"),
    ],
)
@pytest.mark.parametrize("protocol", ["tcp", "tls"])
def test_http_only_listener_options_are_refused_on_streams(
    protocol: str, extra: dict[str, Any], named: str
) -> None:
    reason = error_at(listener("raw", 9000, protocol=protocol, **extra), "spec")
    assert reason.startswith(named) and protocol in reason


def test_access_log_and_groups_apply_to_stream_listeners() -> None:
    config = config_of(listener("raw", 9000, protocol="tcp", access_log=False, groups=["edge"]))
    spec = config.listeners["raw"].spec
    assert not spec.access_log and spec.groups == ("edge",)


def test_a_tls_route_takes_exact_names_and_wildcards_but_not_any_name() -> None:
    assert config_of(tls_route("a", ("a.example.com", "*.example.com"))).tls_routes["a"]
    assert "not a server name" in error_at(tls_route("a", ("*",)), "spec.hostnames[0]")
    assert "more than once" in error_at(tls_route("a", ("x.io", "x.io")), "spec.hostnames")


def test_backends_need_one_weight_above_zero_and_distinct_services() -> None:
    zero = tcp_route(backends=[{"service": "a", "weight": 0}])
    assert "must not all be 0" in error_at(zero, "spec.backends")
    twice = tcp_route(backends=[{"service": "a"}, {"service": "a", "weight": 2}])
    assert "more than once" in error_at(twice, "spec.backends")
    many = tcp_route(backends=[{"service": f"s{i}"} for i in range(65)])
    assert error_at(many, "spec.backends")


def test_stream_routes_round_trip_through_the_config() -> None:
    config = config_of(TCP, TLS, tcp_route(idle_timeout="1m"), tls_route("shop", ("shop.io",)))
    kinds = [document.kind for document, _ in config.documents()]
    assert kinds.count("TcpRoute") == 1 and kinds.count("TlsRoute") == 1
    again = Config.from_documents(
        (d.kind, d.name, d.spec.model_dump(mode="json"), r) for d, r in config.documents()
    )
    assert again.tcp_routes == config.tcp_routes and again.tls_routes == config.tls_routes


# -- Cross-document checks -----------------------------------------------------------------


def test_stream_routes_need_a_listener_of_their_protocol() -> None:
    config = config_of(
        listener(),
        TCP,
        TLS,
        tcp_route(listeners=("public", "sni", "gone")),
        tls_route("t", ("t.io",), ("db",)),
    )
    found = errors(config)
    assert ("TcpRoute", "spec.listeners[0]") in [(k, f) for k, f, _ in found]
    assert ("TcpRoute", "spec.listeners[1]") in [(k, f) for k, f, _ in found]
    assert ("TcpRoute", "spec.listeners[2]", "no listener 'gone'") in found
    assert any(k == "TlsRoute" and "tls listeners only" in r for k, _, r in found)


def test_http_routes_and_listener_policies_are_refused_on_stream_listeners() -> None:
    policy = doc("RateLimitPolicy", "slow", listeners=["db"], requests=10, per="1s")
    config = config_of(TCP, TLS, route(listeners=("sni",)), policy)
    found = {(k, f) for k, f, _ in errors(config)}
    assert {("Route", "spec.listeners[0]"), ("RateLimitPolicy", "spec.listeners[0]")} <= found


def test_the_newer_of_two_routes_is_the_one_refused() -> None:
    config = config_of(TCP, TLS, tcp_route("old"), tcp_route("new"))
    assert [(k, f) for k, f, _ in errors(config)] == [("TcpRoute", "spec.listeners[0]")]
    assert "'old'" in errors(config)[0][2]
    tls = config_of(TLS, tls_route("old", ("a.io", "b.io")), tls_route("new", ("c.io", "b.io")))
    assert errors(tls) == [
        (
            "TlsRoute",
            "spec.hostnames[1]",
            "TlsRoute 'old' already takes server name 'b.io' on listener 'sni'",
        )
    ]


def test_a_stream_listener_without_a_route_and_backends_without_instances_warn() -> None:
    config = config_of(TCP, TLS, tls_route("shop", ("shop.io",)))
    report = validate_config(config, inventory_of(other=1))
    fields = [(p.kind, p.name, p.field) for p in report.warnings]
    assert ("Listener", "db", "spec.protocol") in fields
    assert ("TlsRoute", "shop", "spec.backends[0].service") in fields
    assert report.ok


# -- Translation ---------------------------------------------------------------------------


def test_a_tcp_listener_proxies_to_its_one_backend() -> None:
    config = config_of(TCP, tcp_route(idle_timeout="90s", backends=[{"service": "db"}]))
    resources = default_resources(config, inventory_of(db=2))
    envoy_listener = the_listener(config, "db")
    assert envoy_listener.address.socket_address.port_value == 5432
    assert not envoy_listener.listener_filters
    (chain,) = envoy_listener.filter_chains
    assert not chain.HasField("transport_socket") and not chain.HasField("filter_chain_match")
    proxy = proxy_of(chain)
    assert proxy.cluster == "db" and proxy.idle_timeout.seconds == 90
    assert names(resources.clusters) == ["db"]
    assert names(resources.endpoints) == ["db"]
    assert len(resources.endpoints[0].endpoints[0].lb_endpoints) == 2  # type: ignore[attr-defined]
    assert resources.routes == ()  # no RDS for a stream listener


def test_weights_split_over_weighted_clusters_leaving_out_weight_zero() -> None:
    backends = [
        {"service": "a", "weight": 7},
        {"service": "b", "weight": 3},
        {"service": "idle", "weight": 0},
    ]
    config = config_of(TCP, tcp_route(backends=backends))
    proxy = proxy_of(the_listener(config, "db").filter_chains[0])
    assert not proxy.cluster
    assert [(c.name, c.weight) for c in proxy.weighted_clusters.clusters] == [("a", 7), ("b", 3)]
    assert names(default_resources(config).clusters) == ["a", "b", "idle"]
    only = config_of(TCP, tcp_route(backends=[{"service": "a"}, {"service": "idle", "weight": 0}]))
    assert proxy_of(the_listener(only, "db").filter_chains[0]).cluster == "a"


def test_the_service_policy_sets_the_connect_timeout() -> None:
    policy = doc("ServicePolicy", "db", connect_timeout="250ms")
    resources = default_resources(config_of(TCP, tcp_route(), policy))
    (cluster,) = resources.clusters
    assert cluster.connect_timeout.nanos == 250_000_000  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("listener_log", "route_log"), [(True, True), (True, False), (False, True)]
)
def test_a_json_access_log_per_connection_when_listener_and_route_both_log(
    listener_log: bool, route_log: bool
) -> None:
    config = config_of(
        listener("db", 5432, protocol="tcp", access_log=listener_log),
        tcp_route(access_log=route_log),
    )
    proxy = proxy_of(the_listener(config, "db").filter_chains[0])
    if not (listener_log and route_log):
        assert not proxy.access_log
        return
    (log,) = proxy.access_log
    assert log.name == "envoy.access_loggers.stdout"
    text = log.typed_config.value.decode(errors="replace")
    for operator in TCP_ACCESS_LOG_FIELDS.values():
        assert operator in text


def test_a_tls_listener_matches_server_names_and_never_terminates_tls() -> None:
    config = config_of(
        TLS,
        tls_route("shop", ("shop.io", "*.shop.io")),
        tls_route(
            "api", ("api.io",), backends=[{"service": "api", "weight": 2}, {"service": "v2"}]
        ),
    )
    envoy_listener = the_listener(config, "sni")
    assert [f.name for f in envoy_listener.listener_filters] == [
        "envoy.filters.listener.tls_inspector"
    ]
    assert not envoy_listener.HasField("default_filter_chain")  # an unknown SNI: disconnected
    chains = {c.name: c for c in envoy_listener.filter_chains}
    assert list(chains) == ["shop", "api"]  # oldest first
    assert list(chains["shop"].filter_chain_match.server_names) == ["shop.io", "*.shop.io"]
    assert all(not chain.HasField("transport_socket") for chain in chains.values())
    assert proxy_of(chains["shop"]).cluster == "shop"
    weighted = proxy_of(chains["api"]).weighted_clusters.clusters
    assert [(c.name, c.weight) for c in weighted] == [("api", 2), ("v2", 1)]
    assert names(default_resources(config).clusters) == ["api", "shop", "v2"]


def test_a_server_name_listed_twice_stays_with_the_older_route() -> None:
    """What validation refuses, translation still never sends (a store edited behind the
    API's back): Envoy would reject two chains matching the same name."""
    config = config_of(TLS, tls_route("old", ("a.io",)), tls_route("new", ("a.io", "b.io")))
    chains = the_listener(config, "sni").filter_chains
    assert [(c.name, list(c.filter_chain_match.server_names)) for c in chains] == [
        ("old", ["a.io"]),
        ("new", ["b.io"]),
    ]


def test_a_stream_listener_without_routes_is_not_sent_nor_its_wrong_kind_routes_used() -> None:
    config = config_of(TCP, TLS, listener(), route(), tls_route("x", ("x.io",), ("db",)))
    resources = default_resources(config)
    assert [m.name for m in resources.listeners] == ["public"]  # type: ignore[attr-defined]
    assert names(resources.clusters) == ["web"]  # the http route's service only


def test_stream_listeners_go_to_their_groups_only() -> None:
    config = config_of(
        listener("db", 5432, protocol="tcp", groups=["data"]),
        tcp_route(),
        listener(),
        route(),
    )
    translation = translate(Inventory(), config)
    assert [m.name for m in translation.default.listeners] == ["public"]  # type: ignore[attr-defined]
    data = translation.groups["data"]
    assert [m.name for m in data.listeners] == ["db", "public"]  # type: ignore[attr-defined]
    assert names(data.clusters) == ["db", "web"]


def test_a_passthrough_backend_with_upstream_tls_is_refused() -> None:
    tls_policy = doc("TlsPolicy", "up", upstream={})
    policy = doc("ServicePolicy", "shop", tls_policy="up")
    config = config_of(TLS, tls_policy, policy, tls_route("shop", ("shop.io",)))
    ((kind, field, reason),) = errors(config)
    assert (kind, field) == ("TlsRoute", "spec.backends[0].service")
    assert "tls_policy 'up'" in reason
    tcp = config_of(TCP, tls_policy, doc("ServicePolicy", "db", tls_policy="up"), tcp_route())
    assert errors(tcp) == []  # a TcpRoute may originate TLS to its backend


def test_an_http_health_check_on_a_stream_backend_warns() -> None:
    policy = doc("ServicePolicy", "db", health_check={"path": "/healthz"})
    report = validate_config(config_of(TCP, tcp_route(), policy), inventory_of(db=1))
    found = [(p.field, p.reason) for p in report.warnings if p.kind == "TcpRoute"]
    assert len(found) == 1 and found[0][0] == "spec.backends[0].service"
    assert "HTTP health check" in found[0][1]
