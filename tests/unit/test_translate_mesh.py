"""The mesh's translation: sidecar secrets, listeners and clusters, and intentions as RBAC.

RBAC is checked by evaluating the produced rules with a small interpreter of Envoy's RBAC
semantics (principals on the peer's URI SAN, permissions on method and path), so the tests
say which calls get in rather than how the protos happen to be nested.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message

from tests.integration.config_strategies import mesh_identities
from tests.unit.test_translate_determinism import example_documents, inventory, serialised
from xds_server.model import Config, Endpoint, Health, Inventory, Service
from xds_server.model.mesh import spiffe_id
from xds_server.model.mesh_checks import edge_callers, mesh_warnings
from xds_server.model.workload import NO_IDENTITIES, Identities
from xds_server.translate import ProxyResources, Translation, translate
from xds_server.translate.mesh import mesh_resources

TD = "mesh.local"


def mesh_config(
    *extra: tuple[str, str, dict[str, Any]], mesh: dict[str, Any] | None = None
) -> Config:
    """``frontend`` calls ``api`` (http); ``db`` is a tcp service ``api`` calls."""
    documents: list[tuple[str, str, dict[str, Any]]] = [
        ("Mesh", "mesh", mesh or {}),
        (
            "Sidecar",
            "frontend",
            {
                "inbound": {"port": 20000, "local_port": 8080},
                "upstreams": [{"service": "api", "local_port": 9191}],
            },
        ),
        (
            "Sidecar",
            "api",
            {
                "groups": ["api-a", "api-b"],
                "inbound": {"port": 20001, "local_port": 8081, "protocol": "grpc"},
                "upstreams": [{"service": "db", "local_port": 5432, "protocol": "tcp"}],
            },
        ),
        ("Sidecar", "db", {"inbound": {"port": 20002, "local_port": 5433, "protocol": "tcp"}}),
        *extra,
    ]
    return Config.from_documents(
        (kind, name, spec, revision) for revision, (kind, name, spec) in enumerate(documents, 1)
    )


def intention(name: str, source: str, destination: str, **spec: Any) -> tuple[str, str, Any]:
    return ("Intention", name, {"source": source, "destination": destination, **spec})


MESH_INVENTORY = Inventory.of(
    {
        "api": Service(
            "api",
            (Endpoint("10.0.0.1", 8081),),
            mesh_endpoints=(
                Endpoint("10.0.0.1", 20001),
                Endpoint("10.0.0.2", 20001, health=Health.UNHEALTHY),
            ),
        ),
    }
)
IDENTITIES = mesh_identities(("frontend", "api", "db"))


def mesh_translation(config: Config, identities: Identities = IDENTITIES) -> Translation:
    return translate(MESH_INVENTORY, config, identities)


def names(messages: tuple[Message, ...]) -> list[str]:
    return [getattr(m, "cluster_name", "") or getattr(m, "name") for m in messages]  # noqa: B009


def by_name(messages: tuple[Message, ...], name: str) -> Any:
    (found,) = [m for m in messages if (getattr(m, "cluster_name", "") or m.name) == name]  # type: ignore[attr-defined]
    return found


def unpack(any_message: Any, message: Any) -> Any:
    assert any_message.Unpack(message)
    return message


# -- An interpreter of Envoy RBAC (the parts the mesh uses) --------------------------------


def _principal(principal: Any, peer: str | None) -> bool:
    kind = principal.WhichOneof("identifier")
    if kind == "any":
        return True
    if kind == "authenticated":
        matcher = principal.authenticated.principal_name
        if peer is None:
            return False
        which = matcher.WhichOneof("match_pattern")
        return peer == matcher.exact if which == "exact" else peer.startswith(matcher.prefix)
    if kind == "and_ids":
        return all(_principal(p, peer) for p in principal.and_ids.ids)
    if kind == "or_ids":
        return any(_principal(p, peer) for p in principal.or_ids.ids)
    if kind == "not_id":
        return not _principal(principal.not_id, peer)
    raise AssertionError(f"unexpected principal {kind}")


def _permission(permission: Any, method: str, path: str) -> bool:
    kind = permission.WhichOneof("rule")
    if kind == "any":
        return True
    if kind == "and_rules":
        return all(_permission(p, method, path) for p in permission.and_rules.rules)
    if kind == "or_rules":
        return any(_permission(p, method, path) for p in permission.or_rules.rules)
    if kind == "not_rule":
        return not _permission(permission.not_rule, method, path)
    if kind == "url_path":
        matcher = permission.url_path.path
        which = matcher.WhichOneof("match_pattern")
        return path == matcher.exact if which == "exact" else path.startswith(matcher.prefix)
    if kind == "header":
        assert permission.header.name == ":method"
        return bool(method == permission.header.string_match.exact)
    raise AssertionError(f"unexpected permission {kind}")


def allowed(rules: Any, caller: str | None, method: str = "GET", path: str = "/") -> bool:
    peer = spiffe_id(TD, caller) if caller is not None else None
    matched = any(
        any(_principal(p, peer) for p in policy.principals)
        and any(_permission(p, method, path) for p in policy.permissions)
        for policy in rules.policies.values()
    )
    return matched if rules.action == rbac_pb2.RBAC.ALLOW else not matched


def assert_mesh_client(cluster: Any, caller: str, upstream: str) -> None:
    """``cluster`` reaches ``upstream``'s sidecars over mutual TLS as ``caller``."""
    context = unpack(cluster.transport_socket.typed_config, tls_pb2.UpstreamTlsContext())
    common = context.common_tls_context
    assert [c.name for c in common.tls_certificate_sds_secret_configs] == [
        f"mesh/identity/{caller}"
    ]
    combined = common.combined_validation_context
    (san,) = combined.default_validation_context.match_typed_subject_alt_names
    assert san.matcher.exact == spiffe_id(TD, upstream)
    assert combined.validation_context_sds_secret_config.name == "mesh/trust-bundle"
    assert context.sni == f"{upstream}.service.{TD}"


def ports(assignment: Any) -> list[int]:
    return [
        e.endpoint.address.socket_address.port_value
        for locality in assignment.endpoints
        for e in locality.lb_endpoints
    ]


def inbound_chain(resources: ProxyResources, service: str, chain: int = 0) -> Any:
    return by_name(resources.listeners, f"mesh-inbound/{service}").filter_chains[chain]


def http_rbac(resources: ProxyResources, service: str) -> Any:
    """The intentions' rules: on the inbound route (over RDS), the listener's own RBAC filter
    denying everything a route does not allow (fail closed)."""
    manager = unpack(
        inbound_chain(resources, service).filters[0].typed_config, hcm_pb2.HttpConnectionManager()
    )
    rbac_filter = manager.http_filters[0]
    assert rbac_filter.name == "envoy.filters.http.rbac"
    fallback = unpack(rbac_filter.typed_config, http_rbac_pb2.RBAC()).rules
    assert fallback.action == rbac_pb2.RBAC.ALLOW and not fallback.policies
    assert manager.rds.route_config_name == f"mesh-inbound/{service}"
    (route,) = by_name(resources.routes, f"mesh-inbound/{service}").virtual_hosts[0].routes
    per_route = unpack(
        route.typed_per_filter_config["envoy.filters.http.rbac"], http_rbac_pb2.RBACPerRoute()
    )
    return per_route.rbac.rules


def api_rules(*intentions: tuple[str, str, Any], mesh: dict[str, Any] | None = None) -> Any:
    return http_rbac(mesh_translation(mesh_config(*intentions, mesh=mesh)).groups["api-a"], "api")


# -- No mesh, no change --------------------------------------------------------------------


def test_without_a_mesh_document_the_output_is_what_it_was() -> None:
    sidecar = ("Sidecar", "api", {"inbound": {"port": 20001, "local_port": 8081}})
    documents = example_documents()
    plain = Config.from_documents(documents)
    with_sidecar = Config.from_documents([*documents, (*sidecar, len(documents) + 1)])
    before = serialised(translate(inventory(), plain))
    assert serialised(translate(inventory(), plain, IDENTITIES)) == before
    assert serialised(translate(inventory(), with_sidecar, IDENTITIES)) == before
    assert set(translate(inventory(), with_sidecar, IDENTITIES).groups) == {"inner"}


def test_without_identities_no_sidecar_is_configured() -> None:
    translation = mesh_translation(mesh_config(), NO_IDENTITIES)
    assert dict(translation.groups) == {}
    partial = mesh_translation(mesh_config(), mesh_identities(("frontend",)))
    assert sorted(partial.groups) == ["frontend"]  # api and db: not issued yet, left out


# -- Resources per group -------------------------------------------------------------------


def test_each_sidecar_group_gets_its_service_resources_and_identity_only() -> None:
    translation = mesh_translation(mesh_config())
    assert sorted(translation.groups) == ["api-a", "api-b", "db", "frontend"]
    frontend = translation.groups["frontend"]
    assert names(frontend.secrets) == ["mesh/identity/frontend", "mesh/trust-bundle"]
    assert names(frontend.listeners) == ["mesh-inbound/frontend", "mesh-outbound/frontend/api"]
    assert names(frontend.clusters) == ["mesh-local/frontend", "mesh/api"]
    assert names(frontend.endpoints) == ["mesh/api"]
    api = translation.groups["api-a"]
    assert translation.groups["api-b"] == api
    assert names(api.secrets) == ["mesh/identity/api", "mesh/trust-bundle"]
    assert names(api.listeners) == ["mesh-inbound/api", "mesh-outbound/api/db"]
    assert translation.default.secrets == ()
    secret = by_name(frontend.secrets, "mesh/identity/frontend")
    assert secret.tls_certificate.certificate_chain.inline_string.startswith("-----BEGIN")
    bundle = by_name(frontend.secrets, "mesh/trust-bundle")
    assert bundle.validation_context.trusted_ca.inline_string == IDENTITIES.trust_bundle[0]


def test_the_trust_bundle_holds_every_root() -> None:
    identities = mesh_identities(("frontend",))
    two = Identities(identities.by_service, ("ROOT-A\n", "ROOT-B"))
    resources = mesh_translation(mesh_config(), two).groups["frontend"]
    bundle = by_name(resources.secrets, "mesh/trust-bundle")
    assert bundle.validation_context.trusted_ca.inline_string == "ROOT-A\nROOT-B\n"


def test_inbound_requires_a_mesh_certificate_and_forwards_the_caller() -> None:
    resources = mesh_translation(mesh_config()).groups["frontend"]
    listener = by_name(resources.listeners, "mesh-inbound/frontend")
    assert listener.address.socket_address.address == "0.0.0.0"
    assert listener.address.socket_address.port_value == 20000
    (chain,) = listener.filter_chains
    context = unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext())
    assert context.require_client_certificate.value
    common = context.common_tls_context
    assert [c.name for c in common.tls_certificate_sds_secret_configs] == ["mesh/identity/frontend"]
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "mesh/trust-bundle"
    (san,) = combined.default_validation_context.match_typed_subject_alt_names
    assert san.matcher.prefix == f"spiffe://{TD}/"
    manager = unpack(chain.filters[0].typed_config, hcm_pb2.HttpConnectionManager())
    assert manager.forward_client_cert_details == hcm_pb2.HttpConnectionManager.SANITIZE_SET
    assert manager.set_current_client_cert_details.uri
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]
    (route,) = by_name(resources.routes, "mesh-inbound/frontend").virtual_hosts[0].routes
    assert route.route.cluster == "mesh-local/frontend"
    local = by_name(resources.clusters, "mesh-local/frontend")
    address = local.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "127.0.0.1",
        8080,
    )
    assert not local.typed_extension_protocol_options  # http/1.1 to the application


def test_grpc_application_is_spoken_to_in_http2() -> None:
    resources = mesh_translation(mesh_config()).groups["api-a"]
    local = by_name(resources.clusters, "mesh-local/api")
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in (
        local.typed_extension_protocol_options
    )


def test_outbound_goes_to_the_upstream_sidecars_verifying_its_spiffe_id() -> None:
    config = mesh_config(
        ("ServicePolicy", "api", {"load_balancing": {"policy": "least_request"}}),
    )
    resources = mesh_translation(config).groups["frontend"]
    listener = by_name(resources.listeners, "mesh-outbound/frontend/api")
    assert listener.address.socket_address.address == "127.0.0.1"
    assert listener.address.socket_address.port_value == 9191
    manager = unpack(
        listener.filter_chains[0].filters[0].typed_config, hcm_pb2.HttpConnectionManager()
    )
    assert manager.route_config.virtual_hosts[0].routes[0].route.cluster == "mesh/api"
    assert not manager.http_filters[:-1]  # the router only
    cluster = by_name(resources.clusters, "mesh/api")
    assert cluster.lb_policy == cluster.LEAST_REQUEST
    assert cluster.eds_cluster_config.service_name == "mesh/api"
    assert_mesh_client(cluster, "frontend", "api")
    assignment = by_name(resources.endpoints, "mesh/api")
    hosts = [
        (e.endpoint.address.socket_address.port_value, e.health_status)
        for locality in assignment.endpoints
        for e in locality.lb_endpoints
    ]
    assert hosts == [(20001, 1), (20001, 2)]  # HEALTHY, UNHEALTHY: the sidecars, not :8081


def test_tcp_inbound_and_outbound_proxy_bytes_with_network_rbac() -> None:
    translation = mesh_translation(mesh_config(intention("api-db", "api", "db", action="allow")))
    db = translation.groups["db"]
    filters = inbound_chain(db, "db").filters
    assert [f.name for f in filters] == [
        "envoy.filters.network.rbac",
        "envoy.filters.network.tcp_proxy",
    ]
    rules = unpack(filters[0].typed_config, network_rbac_pb2.RBAC()).rules
    assert allowed(rules, "api")
    assert not allowed(rules, "frontend")
    proxy = unpack(filters[1].typed_config, tcp_proxy_pb2.TcpProxy())
    assert proxy.cluster == "mesh-local/db"
    outbound = by_name(translation.groups["api-a"].listeners, "mesh-outbound/api/db")
    proxy = unpack(outbound.filter_chains[0].filters[0].typed_config, tcp_proxy_pb2.TcpProxy())
    assert proxy.cluster == "mesh/db"
    assert names(translation.groups["api-a"].endpoints) == ["mesh/db"]  # no registry entry


def test_permissive_adds_a_plain_text_chain_without_rbac() -> None:
    resources = mesh_translation(mesh_config(mesh={"mtls": "permissive"})).groups["frontend"]
    listener = by_name(resources.listeners, "mesh-inbound/frontend")
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    mtls, plain = listener.filter_chains
    assert mtls.filter_chain_match.transport_protocol == "tls"
    assert plain.filter_chain_match.transport_protocol == "raw_buffer"
    assert not plain.HasField("transport_socket")
    manager = unpack(plain.filters[0].typed_config, hcm_pb2.HttpConnectionManager())
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]


# -- Intentions ----------------------------------------------------------------------------


def test_default_deny_lets_in_only_what_an_intention_allows() -> None:
    assert not allowed(api_rules(), "frontend")
    rules = api_rules(intention("fe-api", "frontend", "api", action="allow"))
    assert rules.action == rbac_pb2.RBAC.ALLOW
    assert allowed(rules, "frontend")
    assert not allowed(rules, "billing")
    assert not allowed(rules, None)


def test_an_intention_change_changes_the_route_not_the_listener() -> None:
    """Envoy applies a route update to open connections at once; a listener update only to
    new ones (old connections keep the old rules while they drain, 600 s by default)."""
    before = mesh_translation(mesh_config()).groups["api-a"]
    after = mesh_translation(
        mesh_config(intention("fe-api", "frontend", "api", action="allow"))
    ).groups["api-a"]
    listener = "mesh-inbound/api"
    assert by_name(before.listeners, listener).SerializeToString(deterministic=True) == by_name(
        after.listeners, listener
    ).SerializeToString(deterministic=True)
    assert by_name(before.routes, listener) != by_name(after.routes, listener)


def test_an_exact_deny_beats_a_wildcard_allow() -> None:
    rules = api_rules(
        intention("all", "*", "api", action="allow"),
        intention("no-fe", "frontend", "api", action="deny"),
    )
    assert not allowed(rules, "frontend")
    assert allowed(rules, "billing")


def test_an_exact_allow_beats_a_wildcard_deny_under_default_allow() -> None:
    rules = api_rules(
        intention("none", "*", "api", action="deny"),
        intention("fe", "frontend", "api", action="allow"),
        mesh={"default_action": "allow"},
    )
    assert rules.action == rbac_pb2.RBAC.DENY
    assert allowed(rules, "frontend")
    assert not allowed(rules, "billing")


def test_default_allow_without_intentions_lets_everyone_in() -> None:
    rules = api_rules(mesh={"default_action": "allow"})
    assert allowed(rules, "frontend")
    assert allowed(
        api_rules(intention("x", "db", "api", action="deny"), mesh={"default_action": "allow"}),
        "frontend",
    )


def test_l7_get_public_only() -> None:
    permissions = [{"action": "allow", "http": {"path_exact": "/public", "methods": ["GET"]}}]
    rules = api_rules(intention("fe", "frontend", "api", permissions=permissions))
    assert allowed(rules, "frontend", "GET", "/public")
    assert not allowed(rules, "frontend", "POST", "/public")
    assert not allowed(rules, "frontend", "GET", "/private")
    assert not allowed(rules, "billing", "GET", "/public")


@pytest.mark.parametrize("default", ["deny", "allow"])
def test_the_first_matching_permission_decides(default: str) -> None:
    permissions = [
        {"action": "deny", "http": {"path_prefix": "/admin"}},
        {"action": "allow", "http": {"path_prefix": "/"}},
    ]
    rules = api_rules(
        intention("fe", "frontend", "api", permissions=permissions),
        intention("all", "*", "api", action="allow"),
        mesh={"default_action": default},
    )
    assert not allowed(rules, "frontend", "GET", "/admin/users")
    assert allowed(rules, "frontend", "GET", "/orders")
    assert allowed(rules, "billing", "GET", "/admin/users")  # judged by "*"


def test_unmatched_permissions_fall_to_the_default_not_to_the_wildcard() -> None:
    permissions = [{"action": "allow", "http": {"path_prefix": "/public"}}]
    documents = (
        intention("fe", "frontend", "api", permissions=permissions),
        intention("all", "*", "api", action="allow"),
    )
    assert not allowed(api_rules(*documents), "frontend", "GET", "/private")
    denied = [{"action": "deny", "http": {"path_prefix": "/private"}}]
    rules = api_rules(
        intention("fe", "frontend", "api", permissions=denied),
        intention("none", "*", "api", action="deny"),
        mesh={"default_action": "allow"},
    )
    assert allowed(rules, "frontend", "GET", "/public")
    assert not allowed(rules, "frontend", "GET", "/private")


def test_intentions_for_other_destinations_do_not_apply() -> None:
    rules = api_rules(intention("fe-db", "frontend", "db", action="allow"))
    assert not allowed(rules, "frontend")


def test_translation_is_deterministic_and_cached() -> None:
    config = mesh_config(intention("fe", "frontend", "api", action="allow"))
    first, second = mesh_translation(config), mesh_translation(config)
    assert serialised(first) == serialised(second)
    assert first.groups["frontend"].listeners[0] is second.groups["frontend"].listeners[0]


# -- An edge group calling a mesh service --------------------------------------------------

EDGE_DOCUMENTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("Listener", "edge-in", {"port": 8000, "groups": ["edge"]}),
    ("Listener", "everyone", {"port": 8001}),
    ("Route", "to-api", {"listeners": ["edge-in"], "rules": [{"backends": [{"service": "api"}]}]}),
    ("Route", "to-web", {"listeners": ["everyone"], "rules": [{"backends": [{"service": "web"}]}]}),
    # An upstream TLS policy for a mesh service: the mesh's mutual TLS replaces it.
    ("TlsPolicy", "to-api", {"upstream": {"ca": "ca", "sni": "api.internal"}}),
    ("Certificate", "ca", {"ca_bundle": IDENTITIES.trust_bundle[0]}),
    (
        "ServicePolicy",
        "api",
        {"load_balancing": {"policy": "least_request"}, "tls_policy": "to-api"},
    ),
)
EDGE_IDENTITIES = mesh_identities(("frontend", "api", "db", "edge"))


def test_edge_callers_are_the_named_groups_routing_to_mesh_services() -> None:
    config = mesh_config(
        *EDGE_DOCUMENTS,
        ("Listener", "two", {"port": 8002, "groups": ["edge", "other"]}),
        ("Route", "both", {"listeners": ["two"], "rules": [{"backends": [{"service": "db"}]}]}),
        (
            "Route",
            "all",
            {"listeners": ["everyone"], "rules": [{"backends": [{"service": "api"}]}]},
        ),
    )
    assert edge_callers(config) == {"edge": {"api", "db"}, "other": {"db"}}
    without_mesh = Config.from_documents(
        (kind, name, spec, revision)
        for revision, (kind, name, spec) in enumerate(
            [("Sidecar", "api", {"inbound": {"port": 20001, "local_port": 8081}}), *EDGE_DOCUMENTS],
            1,
        )
    )
    assert edge_callers(without_mesh) == {}


def test_a_listener_of_every_group_calling_a_mesh_service_is_warned_about() -> None:
    config = mesh_config(
        *EDGE_DOCUMENTS,
        (
            "Route",
            "all",
            {"listeners": ["everyone"], "rules": [{"backends": [{"service": "api"}]}]},
        ),
    )
    (warning,) = [w for w in mesh_warnings(config) if w.kind == "Listener"]
    assert (warning.name, warning.field) == ("everyone", "spec.groups")
    assert "name its groups to call mesh service 'api' over mTLS" in warning.reason
    warnings = list(mesh_warnings(mesh_config(*EDGE_DOCUMENTS)))
    assert not [w for w in warnings if w.kind == "Listener"]
    (tls,) = [w for w in warnings if w.kind == "ServicePolicy"]
    assert (tls.name, tls.field) == ("api", "spec.tls_policy")


def test_an_edge_group_calls_a_mesh_service_over_mtls_with_its_own_identity() -> None:
    translation = mesh_translation(mesh_config(*EDGE_DOCUMENTS), EDGE_IDENTITIES)
    edge = translation.groups["edge"]
    assert names(edge.secrets) == ["mesh/identity/edge", "mesh/trust-bundle"]
    assert names(edge.clusters) == ["api", "web"]
    cluster = by_name(edge.clusters, "api")
    assert cluster.lb_policy == cluster.LEAST_REQUEST  # api's ServicePolicy still applies
    assert cluster.eds_cluster_config.service_name == "api"
    assert_mesh_client(cluster, "edge", "api")
    assert ports(by_name(edge.endpoints, "api")) == [20001, 20001]  # api's sidecars, not :8081
    assert not by_name(edge.clusters, "web").HasField("transport_socket")  # not in the mesh


def test_groups_that_do_not_call_the_mesh_keep_their_plain_clusters() -> None:
    translation = mesh_translation(mesh_config(*EDGE_DOCUMENTS), EDGE_IDENTITIES)
    default = translation.default
    assert names(default.clusters) == ["web"] and default.secrets == ()
    frontend = translation.groups["frontend"]  # the all-groups listener only, and its sidecar
    assert "api" not in names(frontend.clusters)
    assert names(frontend.secrets) == ["mesh/identity/frontend", "mesh/trust-bundle"]
    everyone = mesh_config(
        ("Listener", "everyone", {"port": 8001}),
        (
            "Route",
            "all",
            {"listeners": ["everyone"], "rules": [{"backends": [{"service": "api"}]}]},
        ),
    )
    plain = by_name(mesh_translation(everyone, EDGE_IDENTITIES).default.clusters, "api")
    assert not plain.HasField("transport_socket")
    assert ports(by_name(mesh_translation(everyone).default.endpoints, "api")) == [8081]


def test_an_edge_group_without_an_identity_sends_the_mesh_service_nothing() -> None:
    edge = mesh_translation(mesh_config(*EDGE_DOCUMENTS), IDENTITIES).groups["edge"]
    assert names(edge.secrets) == []
    cluster = by_name(edge.clusters, "api")
    assert not cluster.HasField("transport_socket")
    assert not by_name(edge.endpoints, "api").endpoints


def test_a_sidecar_group_that_is_also_an_edge_caller_holds_its_identity_once() -> None:
    config = mesh_config(
        ("Listener", "fe-edge", {"port": 8000, "groups": ["frontend"]}),
        (
            "Route",
            "to-api",
            {"listeners": ["fe-edge"], "rules": [{"backends": [{"service": "api"}]}]},
        ),
    )
    frontend = mesh_translation(config).groups["frontend"]
    assert names(frontend.secrets) == ["mesh/identity/frontend", "mesh/trust-bundle"]
    assert names(frontend.clusters) == ["api", "mesh-local/frontend", "mesh/api"]


# -- Routes attached to a mesh upstream (RouteSpec.upstreams) --------------------------------

API_V2 = ("Sidecar", "api-v2", {"inbound": {"port": 20003, "local_port": 8083}})
CANARY = (
    "Route",
    "canary",
    {
        "upstreams": ["api"],
        "rules": [
            {
                "matches": [{"headers": [{"name": "x-canary", "exact": "1"}]}],
                "backends": [{"service": "api-v2"}],
                "retry": {"retry_on": ["5xx"], "num_retries": 2},
            },
            {
                "matches": [{"path": {"prefix": "/split"}}],
                "backends": [{"service": "api", "weight": 90}, {"service": "api-v2", "weight": 10}],
            },
        ],
    },
)


def outbound_manager(resources: ProxyResources) -> Any:
    listener = by_name(resources.listeners, "mesh-outbound/frontend/api")
    return unpack(
        listener.filter_chains[0].filters[0].typed_config, hcm_pb2.HttpConnectionManager()
    )


def test_an_upstream_without_attached_routes_keeps_its_inline_route() -> None:
    plain = mesh_translation(mesh_config(API_V2)).groups["frontend"]
    manager = outbound_manager(plain)
    assert manager.HasField("route_config") and not manager.HasField("rds")
    assert "mesh-outbound/frontend/api" not in names(plain.routes)
    # A route attached to listeners only changes nothing in the sidecars.
    edge_only = ("Listener", "web", {"port": 8000})
    route = ("Route", "r", {"listeners": ["web"], "rules": [{"backends": [{"service": "x"}]}]})
    with_edge = mesh_resources(MESH_INVENTORY, mesh_config(API_V2, edge_only, route), IDENTITIES)[
        "frontend"
    ]
    alone = mesh_resources(MESH_INVENTORY, mesh_config(API_V2), IDENTITIES)["frontend"]
    assert [m.SerializeToString(deterministic=True) for m in with_edge.messages()] == [
        m.SerializeToString(deterministic=True) for m in alone.messages()
    ]


def test_an_attached_route_moves_the_outbound_routes_to_rds_mapped_to_mesh_clusters() -> None:
    resources = mesh_translation(mesh_config(API_V2, CANARY)).groups["frontend"]
    manager = outbound_manager(resources)
    assert manager.rds.route_config_name == "mesh-outbound/frontend/api"
    assert not manager.HasField("route_config")
    configuration = by_name(resources.routes, "mesh-outbound/frontend/api")
    (host,) = configuration.virtual_hosts
    assert list(host.domains) == ["*"]
    split, canary, catch_all = host.routes  # by precedence: the longer prefix first
    assert canary.name == "canary.rules[0].matches[0]"
    assert canary.match.headers[0].name == "x-canary"
    assert canary.route.cluster == "mesh/api-v2"
    assert list(canary.route.retry_policy.retry_on.split(",")) == ["5xx"]
    assert canary.route.retry_policy.num_retries.value == 2
    weights = [(c.name, c.weight.value) for c in split.route.weighted_clusters.clusters]
    assert weights == [("mesh/api", 90), ("mesh/api-v2", 10)]
    assert catch_all.match.prefix == "/" and catch_all.route.cluster == "mesh/api"
    # The backend's cluster comes with it: api-v2's sidecars, over mTLS as frontend.
    assert_mesh_client(by_name(resources.clusters, "mesh/api-v2"), "frontend", "api-v2")
    assert "mesh/api-v2" in names(resources.endpoints)


def test_the_catch_all_keeps_the_upstream_hash_policies() -> None:
    policy = (
        "ServicePolicy",
        "api",
        {"load_balancing": {"policy": "ring_hash", "hash_policies": [{"header": "x-user"}]}},
    )
    resources = mesh_translation(mesh_config(API_V2, CANARY, policy)).groups["frontend"]
    catch_all = by_name(resources.routes, "mesh-outbound/frontend/api").virtual_hosts[0].routes[-1]
    assert [h.header.header_name for h in catch_all.route.hash_policy] == ["x-user"]
