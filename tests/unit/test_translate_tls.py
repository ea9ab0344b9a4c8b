"""TLS translation: https listeners (SNI filter chains), upstream TLS on clusters, SDS secrets
per proxy group, rotation touching secrets only, and failing closed."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from tests.support.pki import ECDSA, KeyPair, TestCa
from tests.unit.model_builders import config_of, doc, listener, route
from tests.unit.translate_helpers import as_dict, connection_manager, names
from xds_server.model import Endpoint, Inventory, Service
from xds_server.translate import ProxyResources, translate

ADS = {"ads": {}, "resource_api_version": "V3"}


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


@pytest.fixture(scope="module")
def pairs(ca: TestCa) -> dict[str, KeyPair]:
    return {
        "default": ca.issue("default.example.com"),
        "shop-rsa": ca.issue("shop.example.com"),
        "shop-ecdsa": ca.issue("shop.example.com", key_type=ECDSA),
        "client": ca.issue("proxy.internal"),
    }


def certificates(ca: TestCa, pairs: dict[str, KeyPair]) -> list[dict[str, Any]]:
    return [pair.document(name) for name, pair in pairs.items()] + [ca.bundle_document("ca")]


EDGE = {
    "downstream": {
        "certificates": ["default"],
        "sni": [
            {
                "server_names": ["shop.example.com", "*.shop.example.com"],
                "certificates": ["shop-rsa", "shop-ecdsa"],
            }
        ],
        "min_version": "1.2",
        "cipher_suites": ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"],
        "client_certificate": {
            "ca": "ca",
            "required": False,
            "subject_alt_names": [{"type": "uri", "prefix": "spiffe://example.org/"}],
            "forward_details": ["subject", "uri", "cert"],
        },
    },
    "upstream": {
        "mode": "mutual",
        "sni": "api.internal",
        "ca": "ca",
        "client_certificate": "client",
    },
}


def tls_config(ca: TestCa, pairs: dict[str, KeyPair], **extra: Any) -> list[dict[str, Any]]:
    return [
        *certificates(ca, pairs),
        doc("TlsPolicy", "edge", **extra.get("policy", EDGE)),
        listener("secure", 8443, protocol="https", tls_policy="edge"),
        listener("plain", 8080),
        route("web", listeners=["secure", "plain"]),
        doc("ServicePolicy", "web", tls_policy="edge", protocol="http2"),
    ]


class Found:
    """Translated resources, as untyped protobuf messages (the protos have no stubs)."""

    def __init__(self, resources: ProxyResources) -> None:
        self.listeners: list[Any] = list(resources.listeners)
        self.clusters: list[Any] = list(resources.clusters)
        self.endpoints: list[Any] = list(resources.endpoints)
        self.routes: list[Any] = list(resources.routes)
        self.secrets: list[Any] = list(resources.secrets)


def resources(*raws: dict[str, Any]) -> Found:
    inventory = Inventory.of({"web": Service("web", (Endpoint("10.0.0.1", 443),))})
    return Found(translate(inventory, config_of(*raws)).default)


def socket_context(socket: Any, context: Any) -> Any:
    assert socket.name == "envoy.transport_sockets.tls"
    assert socket.typed_config.Unpack(context)
    return as_dict(context)


def test_an_https_listener_has_a_filter_chain_per_sni_entry_and_a_default(
    ca: TestCa, pairs: dict[str, KeyPair]
) -> None:
    found = resources(*tls_config(ca, pairs))
    secure = {m.name: m for m in found.listeners}["secure"]
    assert [f.name for f in secure.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    chains = list(secure.filter_chains)
    assert [c.name for c in chains] == ["sni[0]", "default"]
    assert list(chains[0].filter_chain_match.server_names) == [
        "shop.example.com",
        "*.shop.example.com",
    ]
    assert not chains[1].HasField("filter_chain_match")
    sni = socket_context(chains[0].transport_socket, tls_pb2.DownstreamTlsContext())
    common = sni["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"] == [
        {"name": "certificate/shop-rsa", "sds_config": ADS},
        {"name": "certificate/shop-ecdsa", "sds_config": ADS},
    ]
    assert common["tls_params"] == {
        "tls_minimum_protocol_version": "TLSv1_2",
        "tls_maximum_protocol_version": "TLSv1_3",
        "cipher_suites": ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"],
    }
    assert common["alpn_protocols"] == ["h2", "http/1.1"]
    assert common["combined_validation_context"] == {
        "default_validation_context": {
            "match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"prefix": "spiffe://example.org/"}}
            ]
        },
        "validation_context_sds_secret_config": {"name": "certificate/ca", "sds_config": ADS},
    }
    assert sni["require_client_certificate"] is False
    default = socket_context(chains[1].transport_socket, tls_pb2.DownstreamTlsContext())
    assert [
        c["name"] for c in default["common_tls_context"]["tls_certificate_sds_secret_configs"]
    ] == ["certificate/default"]
    # Both chains run the same connection manager, which forwards the client certificate.
    for chain in chains:
        assert chain.filters == secure.filter_chains[0].filters
    manager = as_dict(connection_manager(secure))
    assert manager["forward_client_cert_details"] == "SANITIZE_SET"
    assert manager["set_current_client_cert_details"] == {
        "subject": True,
        "uri": True,
        "cert": True,
    }


def test_a_plain_listener_is_unchanged_by_tls(ca: TestCa, pairs: dict[str, KeyPair]) -> None:
    with_tls = {m.name: m for m in resources(*tls_config(ca, pairs)).listeners}["plain"]
    alone = resources(listener("plain", 8080), route("web", listeners=["plain"])).listeners[0]
    assert with_tls == alone
    assert not with_tls.listener_filters
    assert not with_tls.filter_chains[0].HasField("transport_socket")
    assert "forward_client_cert_details" not in as_dict(connection_manager(with_tls))


def test_no_sni_entries_means_no_tls_inspector(ca: TestCa, pairs: dict[str, KeyPair]) -> None:
    policy = {"downstream": {"certificates": ["shop-rsa", "shop-ecdsa"]}}
    secure = resources(*tls_config(ca, pairs, policy=policy)).listeners[1]
    assert secure.name == "secure" and not secure.listener_filters
    (chain,) = secure.filter_chains
    context = socket_context(chain.transport_socket, tls_pb2.DownstreamTlsContext())
    assert "require_client_certificate" not in context
    assert "validation_context_sds_secret_config" not in context["common_tls_context"]


def test_a_cluster_speaks_mutual_tls_with_sni_and_san_verification(
    ca: TestCa, pairs: dict[str, KeyPair]
) -> None:
    (cluster,) = resources(*tls_config(ca, pairs)).clusters
    context = socket_context(cluster.transport_socket, tls_pb2.UpstreamTlsContext())
    assert context["sni"] == "api.internal"
    common = context["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]  # the service policy's protocol is http2
    assert common["tls_certificate_sds_secret_configs"] == [
        {"name": "certificate/client", "sds_config": ADS}
    ]
    assert common["combined_validation_context"]["default_validation_context"] == {
        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "api.internal"}}]
    }


def test_simple_upstream_tls_without_a_ca_verifies_nothing(
    ca: TestCa, pairs: dict[str, KeyPair]
) -> None:
    policy = {"downstream": EDGE["downstream"], "upstream": {"min_version": "1.3"}}
    (cluster,) = resources(*tls_config(ca, pairs, policy=policy)).clusters
    common = socket_context(cluster.transport_socket, tls_pb2.UpstreamTlsContext())[
        "common_tls_context"
    ]
    assert set(common) == {"tls_params", "alpn_protocols"}
    assert common["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_3"


def test_secrets_hold_the_certificates_and_only_those_used(
    ca: TestCa, pairs: dict[str, KeyPair]
) -> None:
    unused = ca.issue("unused.example.com").document("unused")
    found = resources(*tls_config(ca, pairs), unused)
    assert [m.name for m in found.secrets] == [
        "certificate/ca",
        "certificate/client",
        "certificate/default",
        "certificate/shop-ecdsa",
        "certificate/shop-rsa",
    ]
    secrets = {m.name: as_dict(m) for m in found.secrets}
    assert secrets["certificate/default"]["tls_certificate"] == {
        "certificate_chain": {"inline_string": pairs["default"].chain},
        "private_key": {"inline_string": pairs["default"].key},
    }
    assert secrets["certificate/ca"]["validation_context"] == {
        "trusted_ca": {"inline_string": ca.pem}
    }


def test_file_certificates_become_filename_data_sources() -> None:
    raws = [
        doc(
            "Certificate",
            "shop",
            certificate_file="/etc/envoy/tls/shop.pem",
            private_key_file="/etc/envoy/tls/shop.key",
        ),
        doc("Certificate", "ca", ca_bundle_file="/etc/envoy/tls/ca.pem"),
        doc(
            "TlsPolicy",
            "edge",
            downstream={"certificates": ["shop"], "client_certificate": {"ca": "ca"}},
        ),
        listener("secure", 8443, protocol="https", tls_policy="edge"),
    ]
    secrets = {m.name: as_dict(m) for m in resources(*raws).secrets}
    assert secrets == {
        "certificate/ca": {
            "name": "certificate/ca",
            "validation_context": {"trusted_ca": {"filename": "/etc/envoy/tls/ca.pem"}},
        },
        "certificate/shop": {
            "name": "certificate/shop",
            "tls_certificate": {
                "certificate_chain": {"filename": "/etc/envoy/tls/shop.pem"},
                "private_key": {"filename": "/etc/envoy/tls/shop.key"},
            },
        },
    }


def test_secrets_go_only_to_the_groups_that_use_them(ca: TestCa, pairs: dict[str, KeyPair]) -> None:
    raws = [
        *certificates(ca, pairs),
        doc("TlsPolicy", "edge", downstream={"certificates": ["default"]}),
        doc("TlsPolicy", "to-api", upstream={"ca": "ca", "sni": "api.internal"}),
        listener("secure", 8443, protocol="https", tls_policy="edge", groups=["edge"]),
        listener("internal", 8080, groups=["internal"]),
        route("web", listeners=["secure"]),
        route("api", listeners=["internal"], rules=[{"backends": [{"service": "api"}]}]),
        doc("ServicePolicy", "api", tls_policy="to-api"),
    ]
    translation = translate(Inventory(), config_of(*raws))
    assert names(translation.for_group("edge").secrets) == ["certificate/default"]
    assert names(translation.for_group("internal").secrets) == ["certificate/ca"]
    assert translation.for_group("other").secrets == ()


def test_rotating_a_certificate_changes_the_secret_alone(
    ca: TestCa, pairs: dict[str, KeyPair]
) -> None:
    before = resources(*tls_config(ca, pairs))
    rotated = dict(pairs, default=ca.issue("default.example.com"))
    after = resources(*tls_config(ca, rotated))
    assert after.listeners == before.listeners
    assert after.clusters == before.clusters
    assert after.routes == before.routes
    serialized = [m.SerializeToString(deterministic=True) for m in after.listeners]
    assert serialized == [m.SerializeToString(deterministic=True) for m in before.listeners]
    changed = [
        new.name for new, old in zip(after.secrets, before.secrets, strict=True) if new != old
    ]
    assert changed == ["certificate/default"]


def test_tls_that_cannot_be_set_up_fails_closed(ca: TestCa, pairs: dict[str, KeyPair]) -> None:
    """A store edited behind the API's back: a missing certificate leaves the https listener
    out and sends the TLS service no instances, instead of dangling references or plain
    text."""
    raws = [r for r in tls_config(ca, pairs) if r["name"] != "client"]  # mutual TLS's key pair
    raws = [r for r in raws if r["name"] != "shop-rsa"]
    found = resources(*raws)
    assert [m.name for m in found.listeners] == ["plain"]
    assert [m.name for m in found.routes] == ["plain"]
    (cluster,) = found.clusters
    assert not cluster.HasField("transport_socket")
    (endpoints,) = found.endpoints
    assert not endpoints.endpoints  # no instances: 503, never plain text to a TLS service
    assert found.secrets == []


def test_https_redirect_answers_every_request_with_a_redirect() -> None:
    found = resources(
        listener("plain", 8080, https_redirect=True, https_redirect_port=8443),
        route("web", listeners=["plain"]),
    )
    (configuration,) = found.routes
    assert as_dict(configuration) == {
        "name": "plain",
        "virtual_hosts": [
            {
                "name": "https-redirect",
                "domains": ["*"],
                "routes": [
                    {
                        "name": "https-redirect",
                        "match": {"prefix": "/"},
                        "redirect": {"https_redirect": True, "port_redirect": 8443},
                    }
                ],
            }
        ],
    }
    assert found.clusters == []  # the route's service is not needed
