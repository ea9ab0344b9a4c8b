"""The mesh CA's certificates, parsed back with ``cryptography``: roots, leaves, provided CAs."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from xds_server.mesh.ca import (
    CLOCK_SKEW,
    MeshCaError,
    RootCa,
    ca_from_pem,
    ca_info,
    generate_root,
    issue_leaf,
    key_usage,
)

NOW = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(hours=1)
CA_USAGE = key_usage("key_cert_sign", "crl_sign")


def load(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def verify(root: RootCa | x509.Certificate, chain_pem: str, at: dt.datetime = NOW) -> list[str]:
    """The leaf's URI SANs if the chain verifies against ``root`` as a TLS client would."""
    anchor = root if isinstance(root, x509.Certificate) else load(root.trust_anchor)[0]
    leaf, *intermediates = load(chain_pem)
    verifier = PolicyBuilder().store(Store([anchor])).time(at).build_client_verifier()
    verified = verifier.verify(leaf, intermediates)
    return [str(name.value) for name in verified.subjects or ()]


def make_ca(
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An outside PKI's CA (root, or an intermediate of ``issuer``), or a non-CA certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp CA" if ca else "a server")])
    signer_name, signer_key = (name, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), True
        ).add_extension(CA_USAGE, True)  # cryptography's verifier requires KeyUsage on a CA
    return builder.sign(signer_key, hashes.SHA256()), key


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_the_builtin_root() -> None:
    root = generate_root("mesh.example.com", NOW)
    [certificate] = load(root.certificate)
    key = certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://mesh.example.com"]
    certificate.verify_directly_issued_by(certificate)  # self-signed
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert str(common_name).startswith("xds-server mesh CA ")
    assert certificate.not_valid_after_utc == NOW + dt.timedelta(days=3650)
    assert (
        root.fingerprint.replace(":", "") == certificate.fingerprint(hashes.SHA256()).hex().upper()
    )
    assert root.trust_anchor == root.certificate and root.intermediates == ""
    # Two roots are two keys and two names.
    other = generate_root("mesh.example.com", NOW)
    assert other.fingerprint != root.fingerprint and other.subject != root.subject
    # The key never shows in a repr or in what the API shows.
    assert "PRIVATE KEY" in root.private_key
    assert "PRIVATE KEY" not in repr(root)
    info = ca_info(root)
    assert info == {
        "subject": root.subject,
        "fingerprint_sha256": root.fingerprint,
        "not_before": "2026-05-01T11:59:00Z",
        "not_after": "2036-04-28T12:00:00Z",
        "provider": "builtin",
    }


def test_a_leaf_is_a_spiffe_svid_valid_for_the_ttl() -> None:
    root = generate_root("mesh.local", NOW)
    identity = issue_leaf(root, "mesh.local", "api", NOW, TTL)
    [leaf] = load(identity.certificate_chain)
    assert identity.spiffe_id == "spiffe://mesh.local/service/api"
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [identity.spiffe_id]
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    private = serialization.load_pem_private_key(identity.private_key.encode(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    assert set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert leaf.not_valid_before_utc == NOW - CLOCK_SKEW == identity.not_before
    assert leaf.not_valid_after_utc == NOW + TTL == identity.not_after
    assert int(identity.serial, 16) == leaf.serial_number and len(identity.serial) % 2 == 0
    assert identity.serial == identity.serial.lower()
    assert verify(root, identity.certificate_chain) == [identity.spiffe_id]
    # Expired an instant after its TTL; each issue is a new key and serial.
    with pytest.raises(VerificationError):
        verify(root, identity.certificate_chain, NOW + TTL + dt.timedelta(seconds=1))
    again = issue_leaf(root, "mesh.local", "api", NOW, TTL)
    assert again.serial != identity.serial and again.private_key != identity.private_key
    # Another root's leaf does not verify.
    with pytest.raises(VerificationError):
        verify(generate_root("mesh.local", NOW), identity.certificate_chain)
    assert "PRIVATE KEY" not in repr(identity)


def test_a_leaf_never_outlives_its_ca() -> None:
    root = generate_root("mesh.local", NOW, validity=dt.timedelta(minutes=30))
    identity = issue_leaf(root, "mesh.local", "api", NOW, TTL)
    assert identity.not_after == root.not_after == NOW + dt.timedelta(minutes=30)


def test_a_provided_root_is_used_as_it_is() -> None:
    certificate, key = make_ca()
    ca = ca_from_pem(pem(certificate), key_pem(key))
    assert ca.provider == "provided" and ca.intermediates == ""
    assert ca.trust_anchor == pem(certificate)
    identity = issue_leaf(ca, "mesh.local", "web", NOW, TTL)
    assert len(load(identity.certificate_chain)) == 1
    assert verify(certificate, identity.certificate_chain) == ["spiffe://mesh.local/service/web"]
    assert ca_info(ca)["provider"] == "provided"


def test_a_provided_rsa_ca_signs_ecdsa_leaves() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(CA_USAGE, True)
        .sign(key, hashes.SHA256())
    )
    ca = ca_from_pem(pem(certificate), key_pem(key))
    identity = issue_leaf(ca, "mesh.local", "web", NOW, TTL)
    assert verify(certificate, identity.certificate_chain) == ["spiffe://mesh.local/service/web"]


def test_a_provided_intermediate_travels_in_the_chain() -> None:
    root = make_ca()
    intermediate, key = make_ca(root)
    # The Certificate holds the intermediate first, then its root.
    ca = ca_from_pem(pem(intermediate) + pem(root[0]), key_pem(key))
    assert ca.trust_anchor == pem(root[0])
    assert ca.intermediates == pem(intermediate)
    identity = issue_leaf(ca, "mesh.local", "api", NOW, TTL)
    chain = load(identity.certificate_chain)
    assert [c.subject for c in chain[1:]] == [intermediate.subject]
    assert verify(root[0], identity.certificate_chain) == ["spiffe://mesh.local/service/api"]
    # Given alone, the intermediate is still carried, and trusted as the top of what is known.
    alone = ca_from_pem(pem(intermediate), key_pem(key))
    assert alone.intermediates == pem(intermediate) == alone.trust_anchor


def test_a_provided_ca_whose_key_does_not_match_is_refused() -> None:
    certificate, _ = make_ca()
    _, other_key = make_ca()
    with pytest.raises(MeshCaError, match="private key does not match the CA certificate"):
        ca_from_pem(pem(certificate), key_pem(other_key))


def test_a_certificate_that_is_not_a_ca_is_refused() -> None:
    certificate, key = make_ca(ca=False)
    with pytest.raises(MeshCaError, match=r"not a CA certificate.*BasicConstraints"):
        ca_from_pem(pem(certificate), key_pem(key))
    # Nor is a mesh leaf, though it has a key and a valid chain.
    root = generate_root("mesh.local", NOW)
    leaf = issue_leaf(root, "mesh.local", "api", NOW, TTL)
    with pytest.raises(MeshCaError, match="not a CA certificate"):
        ca_from_pem(leaf.certificate_chain, leaf.private_key)


@pytest.mark.parametrize(
    ("certificate", "key", "reason"),
    [
        ("not pem", "-----BEGIN PRIVATE KEY-----", "mesh CA certificate"),
        (None, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "private key"),
    ],
)
def test_unreadable_pem_is_refused_without_echoing_it(
    certificate: str | None, key: str, reason: str
) -> None:
    text = certificate if certificate is not None else pem(make_ca()[0])
    with pytest.raises(MeshCaError, match=reason) as caught:
        ca_from_pem(text, key)
    assert "AAAA" not in str(caught.value)
