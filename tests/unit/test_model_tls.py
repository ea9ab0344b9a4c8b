"""Certificate and TlsPolicy documents: parsing, checks with ``cryptography``, references,
expiry and files (the model's side of TLS)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.pki import ECDSA, KeyPair, TestCa, utc_now
from tests.unit.model_builders import config_of, doc, error_at, listener, problems, route
from xds_server.model import Inventory, parse_document, validate_config
from xds_server.model.certificate import CertificateForm, CertificateSpec
from xds_server.model.tls import CIPHER_SUITES, TlsPolicySpec

DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


@pytest.fixture(scope="module")
def pair(ca: TestCa) -> KeyPair:
    return ca.issue("shop.example.com", "www.example.com")


@pytest.fixture(scope="module")
def other(ca: TestCa) -> KeyPair:
    return ca.issue("other.example.com")


def certificate(**spec: Any) -> dict[str, Any]:
    return doc("Certificate", "shop", **spec)


def tls_policy(name: str = "edge", **spec: Any) -> dict[str, Any]:
    return doc("TlsPolicy", name, **spec)


def reasons(raw: dict[str, Any]) -> str:
    return " | ".join(f"{p.field}: {p.reason}" for p in problems(raw))


# -- Certificate ---------------------------------------------------------------------------


def test_a_key_pair_and_a_ca_bundle_parse(ca: TestCa, pair: KeyPair) -> None:
    spec = parse_document(pair.document("shop")).spec
    assert isinstance(spec, CertificateSpec) and spec.form is CertificateForm.KEY_PAIR
    bundle = parse_document(ca.bundle_document("ca")).spec
    assert isinstance(bundle, CertificateSpec) and bundle.form is CertificateForm.CA_BUNDLE


def test_a_chain_with_an_intermediate_in_order_parses(ca: TestCa) -> None:
    chained = ca.intermediate().issue("deep.example.com")
    assert chained.chain.count("BEGIN CERTIFICATE") == 2
    assert problems(chained.document("deep")) == []


def test_a_chain_out_of_order_is_refused(ca: TestCa) -> None:
    chained = ca.intermediate().issue("deep.example.com")
    blocks = chained.chain.split("-----END CERTIFICATE-----\n")[:2]
    reversed_chain = "".join(block + "-----END CERTIFICATE-----\n" for block in reversed(blocks))
    reason = error_at(KeyPair(reversed_chain, chained.key).document("deep"), "spec.certificate")
    assert "out of order" in reason and "leaf first" in reason


@pytest.mark.parametrize(
    ("spec", "field", "expected"),
    [
        ({"certificate": "hello", "private_key": "world"}, "spec.certificate", "expected PEM"),
        (
            {
                "certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            },
            "spec.certificate",
            "not a valid X.509 certificate",
        ),
        ({"ca_bundle": "-----BEGIN CERTIFICATE-----\n"}, "spec.ca_bundle", "no PEM certificate"),
        (
            {"certificate_file": "relative.pem", "private_key_file": "/k"},
            "spec.certificate_file",
            "absolute path",
        ),
        ({}, "spec", "set exactly one of"),
        ({"certificate_file": "/a.pem"}, "spec", "private_key_file is missing"),
        (
            {"ca_bundle_file": "/ca.pem", "certificate_file": "/a", "private_key_file": "/b"},
            "spec",
            "set exactly one of",
        ),
    ],
)
def test_malformed_certificates_are_refused(
    spec: dict[str, Any], field: str, expected: str
) -> None:
    assert expected in error_at(certificate(**spec), field)


def test_garbage_private_key_and_mismatched_key_are_refused(pair: KeyPair, other: KeyPair) -> None:
    garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    reason = error_at(KeyPair(pair.chain, garbage).document("shop"), "spec.private_key")
    assert "not a valid PEM private key" in reason
    mismatched = KeyPair(pair.chain, other.key).document("shop")
    assert "does not match the certificate" in error_at(mismatched, "spec")


def test_no_reason_ever_quotes_the_key(pair: KeyPair, other: KeyPair) -> None:
    """A key in the wrong field, a mismatched key, a key with a bad certificate: the
    reasons name the problem but never repeat the key."""
    raws = [
        certificate(certificate=pair.key, private_key=pair.key),
        certificate(ca_bundle=pair.chain + pair.key),
        KeyPair(pair.chain, other.key).document("shop"),
        certificate(certificate="not pem", private_key=other.key),
    ]
    for raw in raws:
        text = reasons(raw)
        assert text, raw
        assert "PRIVATE KEY-----" not in text
        assert not any(
            fragment in text for fragment in [*pair.key_fragments(), *other.key_fragments()]
        )
    assert "belongs in private_key" in reasons(raws[0])


def test_weak_and_unsupported_keys_are_refused() -> None:
    weak = rsa.generate_private_key(65537, 1024)
    k1 = ec.generate_private_key(ec.SECP256K1())
    for key, expected in ((weak, "at least 2048"), (k1, "P-256, P-384 and P-521")):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        assert expected in error_at(certificate(ca_bundle=_self_signed(key)), "spec.ca_bundle")
        assert expected in error_at(
            certificate(certificate=_self_signed(key), private_key=pem), "spec.private_key"
        )


def _self_signed(key: Any, not_after: datetime.datetime | None = None) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak.example.com")])
    now = utc_now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - 10 * DAY)
        .not_valid_after(not_after or now + DAY)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_ecdsa_key_pairs_are_accepted(ca: TestCa) -> None:
    assert problems(ca.issue("ec.example.com", key_type=ECDSA).document("ec")) == []


# -- expiry and files (validate_config with a clock and a reader) ---------------------------


def report_of(
    *raws: dict[str, Any], now: datetime.datetime | None = None, read_file: Any = None
) -> Any:
    return validate_config(config_of(*raws), Inventory(), now=now or utc_now(), read_file=read_file)


def test_an_expired_certificate_is_an_error_unless_allowed(ca: TestCa) -> None:
    expired = ca.issue(
        "old.example.com", not_before=utc_now() - 10 * DAY, not_after=utc_now() - DAY
    )
    parsed = problems(expired.document("old"))
    assert parsed == []  # the model alone has no clock
    report = report_of(expired.document("old"))
    assert [(p.field, "expired on" in p.reason) for p in report.errors] == [
        ("spec.certificate", True)
    ]
    allowed = report_of(expired.document("old", allow_expired=True))
    assert allowed.ok and "expired on" in allowed.warnings[0].reason


def test_a_certificate_expiring_within_30_days_is_a_warning(ca: TestCa) -> None:
    soon = ca.issue("soon.example.com", not_after=utc_now() + 10 * DAY)
    report = report_of(soon.document("soon"))
    assert report.ok
    assert ["expires on" in w.reason for w in report.warnings] == [True]
    later = report_of(soon.document("soon"), now=utc_now() - 30 * DAY)
    assert later.ok and later.warnings == []


def test_a_ca_bundle_with_some_expired_certificates_is_a_warning(ca: TestCa) -> None:
    expired = _self_signed(rsa.generate_private_key(65537, 2048), not_after=utc_now() - DAY)
    report = report_of(doc("Certificate", "b", ca_bundle=ca.pem + expired))
    assert report.ok
    assert ["CA certificate #2" in w.reason and "expired" in w.reason for w in report.warnings] == [
        True
    ]
    only_expired = report_of(doc("Certificate", "b", ca_bundle=expired))
    assert [p.field for p in only_expired.errors] == ["spec.ca_bundle"]


def test_files_are_read_through_the_given_reader(
    pair: KeyPair, other: KeyPair, tmp_path: Path
) -> None:
    chain, key = pair.write(tmp_path, "shop")
    raw = doc("Certificate", "shop", certificate_file=str(chain), private_key_file=str(key))
    read: list[str] = []

    def reader(path: str) -> str:
        read.append(path)
        return Path(path).read_text()

    assert report_of(raw, read_file=reader).ok
    assert sorted(read) == sorted([str(chain), str(key)])
    # Files are not read without a reader (translation and plain parsing never do I/O).
    assert validate_config(config_of(raw), Inventory()).ok

    other.write(tmp_path, "other")
    mismatched = doc(
        "Certificate",
        "shop",
        certificate_file=str(chain),
        private_key_file=str(tmp_path / "other.key"),
    )
    report = report_of(mismatched, read_file=reader)
    assert [p.field for p in report.errors] == ["spec.private_key_file"]
    assert "does not match" in report.errors[0].reason
    assert not any(f in str(report) for f in other.key_fragments())


def test_a_file_the_server_cannot_read_is_a_warning(tmp_path: Path) -> None:
    raw = doc(
        "Certificate",
        "shop",
        certificate_file=str(tmp_path / "missing.pem"),
        private_key_file=str(tmp_path / "missing.key"),
    )
    report = report_of(raw, read_file=lambda path: Path(path).read_text())
    assert report.ok
    assert {w.field for w in report.warnings} == {"spec.certificate_file", "spec.private_key_file"}
    assert "No such file" in report.warnings[0].reason


def test_garbage_in_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    raw = doc("Certificate", "ca", ca_bundle_file=str(tmp_path / "ca.pem"))
    report = report_of(raw, read_file=lambda path: Path(path).read_text())
    assert [p.field for p in report.errors] == ["spec.ca_bundle_file"]


# -- TlsPolicy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "expected"),
    [
        ({}, "spec", "set downstream, upstream, or both"),
        ({"downstream": {}}, "spec.downstream", "list certificates, sni entries"),
        (
            {"downstream": {"certificates": ["a"], "min_version": "1.3", "max_version": "1.2"}},
            "spec.downstream",
            "min_version 1.3 is above max_version 1.2",
        ),
        (
            {"downstream": {"certificates": ["a"], "cipher_suites": ["RC4-MD5"]}},
            "spec.downstream.cipher_suites[0]",
            "unknown cipher suite 'RC4-MD5'",
        ),
        (
            {"downstream": {"certificates": ["a"], "cipher_suites": ["TLS_AES_128_GCM_SHA256"]}},
            "spec.downstream.cipher_suites[0]",
            "TLS 1.3 cipher suite",
        ),
        (
            {
                "downstream": {
                    "certificates": ["a"],
                    "min_version": "1.3",
                    "cipher_suites": ["AES128-SHA"],
                }
            },
            "spec.downstream",
            "would never be used",
        ),
        (
            {"downstream": {"certificates": ["a"], "min_version": "1.4"}},
            "spec.downstream.min_version",
            "'1.0', '1.1', '1.2' or '1.3'",
        ),
        (
            {"downstream": {"certificates": ["a"], "alpn": ["h3"]}},
            "spec.downstream.alpn[0]",
            "'h2' or 'http/1.1'",
        ),
        (
            {"downstream": {"certificates": ["a", "a"]}},
            "spec.downstream.certificates",
            "listed more than once",
        ),
        (
            {
                "downstream": {
                    "sni": [
                        {"server_names": ["a.example.com"], "certificates": ["a"]},
                        {"server_names": ["a.example.com"], "certificates": ["b"]},
                    ]
                }
            },
            "spec.downstream",
            "sni server_names listed more than once",
        ),
        (
            {"downstream": {"sni": [{"server_names": ["*"], "certificates": ["a"]}]}},
            "spec.downstream.sni[0].server_names[0]",
            "matches every name",
        ),
        (
            {"downstream": {"sni": [{"server_names": ["a.example.com"], "certificates": []}]}},
            "spec.downstream.sni[0].certificates",
            "at least one",
        ),
        (
            {
                "downstream": {
                    "certificates": ["a"],
                    "client_certificate": {"ca": "ca", "subject_alt_names": [{"type": "dns"}]},
                }
            },
            "spec.downstream.client_certificate.subject_alt_names[0]",
            "exactly one of exact",
        ),
        ({"upstream": {"mode": "mutual"}}, "spec.upstream", "needs client_certificate"),
        ({"upstream": {"client_certificate": "c"}}, "spec.upstream", "set mode: mutual"),
        (
            {"upstream": {"subject_alt_names": [{"type": "dns", "exact": "a"}]}},
            "spec.upstream",
            "set ca as well",
        ),
        ({"upstream": {"sni": "Not A Host"}}, "spec.upstream.sni", "not a valid hostname"),
    ],
)
def test_invalid_tls_policies(spec: dict[str, Any], field: str, expected: str) -> None:
    assert expected in error_at(tls_policy(**spec), field)


def test_versions_may_be_yaml_numbers_and_default_to_1_2_through_1_3() -> None:
    spec = parse_document(
        tls_policy(downstream={"certificates": ["a"], "min_version": 1.2, "max_version": 1.3})
    ).spec
    assert isinstance(spec, TlsPolicySpec) and spec.downstream is not None
    assert (spec.downstream.min_version, spec.downstream.max_version) == ("1.2", "1.3")
    default = parse_document(tls_policy(upstream={})).spec
    assert isinstance(default, TlsPolicySpec) and default.upstream is not None
    assert (default.upstream.min_version, default.upstream.max_version) == ("1.2", "1.3")


def test_every_listed_cipher_suite_is_accepted_by_the_model() -> None:
    raw = tls_policy(downstream={"certificates": ["a"], "cipher_suites": list(CIPHER_SUITES)})
    assert problems(raw) == []


def test_upstream_verifies_the_sni_name_by_default() -> None:
    spec = parse_document(tls_policy(upstream={"sni": "api.internal", "ca": "ca"})).spec
    assert isinstance(spec, TlsPolicySpec) and spec.upstream is not None
    assert [(n.type, n.exact) for n in spec.upstream.verified_names()] == [("dns", "api.internal")]
    no_ca = parse_document(tls_policy(upstream={"sni": "api.internal"})).spec
    assert isinstance(no_ca, TlsPolicySpec) and no_ca.upstream is not None
    assert no_ca.upstream.verified_names() == ()


# -- Listener and ServicePolicy ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"protocol": "https"}, "needs tls_policy"),
        ({"tls_policy": "edge"}, "protocol https only"),
        ({"protocol": "https", "tls_policy": "edge", "https_redirect": True}, "plain http"),
        ({"https_redirect_port": 443}, "needs https_redirect: true"),
    ],
)
def test_listener_tls_fields(spec: dict[str, Any], expected: str) -> None:
    assert expected in error_at(listener(**spec), "spec")


def _tls_config(ca: TestCa, pair: KeyPair, **overrides: Any) -> list[dict[str, Any]]:
    documents = {
        "certificate": pair.document("shop"),
        "bundle": ca.bundle_document("clients"),
        "policy": tls_policy(
            downstream={"certificates": ["shop"], "client_certificate": {"ca": "clients"}},
            upstream={"mode": "mutual", "client_certificate": "shop", "ca": "clients"},
        ),
        "listener": listener(port=8443, protocol="https", tls_policy="edge"),
        "service": doc("ServicePolicy", "web", tls_policy="edge"),
    }
    documents.update(overrides)
    return [d for d in documents.values() if d]


def test_a_complete_tls_config_is_valid(ca: TestCa, pair: KeyPair) -> None:
    report = report_of(*_tls_config(ca, pair))
    assert report.ok, report.errors


def _errors(*raws: dict[str, Any]) -> list[tuple[str, str, str]]:
    report = validate_config(config_of(*raws), Inventory())
    return [(p.kind, p.field, p.reason) for p in report.errors]


def test_references_must_resolve_to_the_right_kind(ca: TestCa, pair: KeyPair) -> None:
    assert _errors(*_tls_config(ca, pair, certificate={})) == [
        ("TlsPolicy", "spec.downstream.certificates[0]", "no certificate 'shop'"),
        ("TlsPolicy", "spec.upstream.client_certificate", "no certificate 'shop'"),
    ]
    swapped = _tls_config(
        ca,
        pair,
        policy=tls_policy(
            downstream={"certificates": ["clients"], "client_certificate": {"ca": "shop"}},
            upstream={"ca": "shop"},
        ),
    )
    found = _errors(*swapped)
    assert [field for _, field, _ in found] == [
        "spec.downstream.certificates[0]",
        "spec.downstream.client_certificate.ca",
        "spec.upstream.ca",
    ]
    assert "is a CA bundle" in found[0][2] and "needs a CA bundle" in found[1][2]
    assert _errors(*_tls_config(ca, pair, policy={})) == [
        ("Listener", "spec.tls_policy", "no TLS policy 'edge'"),
        ("ServicePolicy", "spec.tls_policy", "no TLS policy 'edge'"),
    ]
    one_sided = _tls_config(ca, pair, policy=tls_policy(upstream={"ca": "clients"}))
    assert _errors(*one_sided) == [
        ("Listener", "spec.tls_policy", "TLS policy 'edge' has no downstream part")
    ]


def test_routes_on_a_redirecting_listener_are_warned_about() -> None:
    report = validate_config(config_of(listener(https_redirect=True), route()), Inventory())
    assert report.ok
    assert [w.field for w in report.warnings if w.field.startswith("spec.listeners")] == [
        "spec.listeners[0]"
    ]
    assert any("redirects every request to https" in w.reason for w in report.warnings)
