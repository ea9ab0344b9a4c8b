"""The mesh CA's certificates: pure functions (the clock is an argument), real cryptography.

- ``generate_root``: the built-in root, ECDSA P-256, self-signed, URI SAN ``spiffe://<td>``.
- ``ca_from_pem``: a provided CA (a ``Certificate`` key pair): its certificate must be a CA and
  the key must be its key; it may be an intermediate (then its chain travels with each leaf).
- ``issue_leaf``: a SPIFFE X.509-SVID for one service, with a key generated here. The server
  generates workload keys (as Consul's servers do) because it hands them out over SDS anyway;
  no CSR round trip with the proxy is possible in xDS.
- ``ca_info``: what may be shown about a CA (never its key).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from xds_server.model.mesh import spiffe_id
from xds_server.model.pki import PemError, check_chain, check_key_pair, check_private_key
from xds_server.model.workload import WorkloadIdentity

#: A leaf is valid from this long before it was issued: clocks of peers are never exact.
CLOCK_SKEW: Final = dt.timedelta(minutes=1)
ROOT_VALIDITY: Final = dt.timedelta(days=3650)
BUILTIN: Final = "builtin"
PROVIDED: Final = "provided"

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class MeshCaError(ValueError):
    """A CA that cannot issue mesh certificates; the message is safe to show (no key)."""


@dataclass(frozen=True, slots=True)
class RootCa:
    """A CA the mesh issues from (built-in root, or a provided root or intermediate)."""

    #: PEM of the CA certificate (the one that signs leaves).
    certificate: str
    private_key: str = field(repr=False)
    #: SHA-256 of the CA certificate's DER, hex pairs separated by ``:`` (as the API shows
    #: certificates).
    fingerprint: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    provider: str
    #: PEM of the certificates a leaf's chain carries after the leaf: the CA itself and its
    #: issuers when it is an intermediate; empty for a root.
    intermediates: str
    #: PEM of the certificate peers trust (the root at the top of the given chain).
    trust_anchor: str
    #: The loaded CA certificate and signing key.
    cert: x509.Certificate = field(repr=False, compare=False)
    signing_key: SigningKey = field(repr=False, compare=False)


_KEY_USAGES: Final = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def key_usage(*allowed: str) -> x509.KeyUsage:
    """A KeyUsage extension allowing just ``allowed`` (``KeyUsage``'s argument names)."""
    flags = {name: name in allowed for name in _KEY_USAGES}
    return x509.KeyUsage(**flags)


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _key_pem(key: SigningKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _fingerprint(certificate: x509.Certificate) -> str:
    digest = certificate.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except Exception:  # InvalidSignature, ValueError, TypeError: not its own issuer
        return False
    return True


def _root_of(
    certificate: x509.Certificate,
    key: SigningKey,
    provider: str,
    chain: tuple[x509.Certificate, ...] = (),
) -> RootCa:
    given = (certificate, *chain)
    above = tuple(c for c in given if not _self_signed(c))
    return RootCa(
        certificate=_pem(certificate),
        private_key=_key_pem(key),
        fingerprint=_fingerprint(certificate),
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        provider=provider,
        intermediates="".join(_pem(c) for c in above),
        trust_anchor=_pem(given[-1]),
        cert=certificate,
        signing_key=key,
    )


def _key_id(public_key: Any) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def generate_root(
    trust_domain: str, now: dt.datetime, validity: dt.timedelta = ROOT_VALIDITY
) -> RootCa:
    """A new built-in root: ECDSA P-256, self-signed, valid until ``now + validity`` (from a
    minute before ``now``, for peers whose clocks are behind)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xds-server"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"xds-server mesh CA {uuid.uuid4().hex[:8]}"),
        ]
    )
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage("key_cert_sign", "crl_sign"), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .add_extension(_key_id(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _root_of(certificate, key, BUILTIN)


def _check(check: Any, *args: str, what: str) -> None:
    try:
        check(*args)
    except PemError as error:
        raise MeshCaError(f"{what}: {error.reason}") from None


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return bool(constraints.value.ca)


def _may_sign_certificates(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return True  # no KeyUsage: every use is allowed
    return bool(usage.value.key_cert_sign)


def ca_from_pem(certificate_pem: str, key_pem: str, provider: str = PROVIDED) -> RootCa:
    """A provided CA: ``certificate_pem`` is the CA certificate first, then (optionally) its
    issuers up to the root; ``key_pem`` the CA's key. Raises :class:`MeshCaError` saying
    what is wrong (not PEM, not a CA, a key that does not match, an unsupported key)."""
    _check(check_chain, certificate_pem, what="the mesh CA certificate")
    _check(check_private_key, key_pem, what="the mesh CA private key")
    certificates = tuple(x509.load_pem_x509_certificates(certificate_pem.encode("ascii")))
    ca = certificates[0]
    if not _is_ca(ca):
        raise MeshCaError(
            "the mesh CA certificate is not a CA certificate (it needs the BasicConstraints"
            " extension with CA:TRUE)"
        )
    if not _may_sign_certificates(ca):
        raise MeshCaError("the mesh CA certificate's KeyUsage does not allow keyCertSign")
    try:
        check_key_pair(certificate_pem, key_pem)
    except PemError:
        raise MeshCaError(
            "the mesh CA private key does not match the CA certificate (the first of the chain)"
        ) from None
    key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    if not isinstance(key, SigningKey):
        raise MeshCaError("the mesh CA key must be ECDSA or RSA to sign mesh certificates")
    return _root_of(ca, key, provider, certificates[1:])


def _authority_key_id(ca: RootCa) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.signing_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


@lru_cache(maxsize=1)
def _leaf_extensions() -> tuple[x509.BasicConstraints, x509.KeyUsage, x509.ExtendedKeyUsage]:
    """The extensions every leaf has (immutable values, built once, not per leaf)."""
    return (
        x509.BasicConstraints(ca=False, path_length=None),
        key_usage("digital_signature", "key_encipherment"),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
    )


@lru_cache(maxsize=16)
def _authority_key_id_of(ca: RootCa) -> x509.AuthorityKeyIdentifier:
    """``_authority_key_id``, once per CA rather than per leaf (it parses the CA's
    extensions)."""
    return _authority_key_id(ca)


def serial_hex(serial: int) -> str:
    """Lowercase hex in whole bytes, as Envoy's ``/certs`` shows a serial number."""
    text = format(serial, "x")
    return text if len(text) % 2 == 0 else "0" + text


def issue_leaf(
    ca: RootCa, trust_domain: str, service: str, now: dt.datetime, ttl: dt.timedelta
) -> WorkloadIdentity:
    """A new key and a leaf certificate for ``service``: URI SAN ``spiffe_id(td, service)``,
    valid from ``now - CLOCK_SKEW`` to ``now + ttl`` (never past the CA's own expiry)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    identity = spiffe_id(trust_domain, service)
    serial = x509.random_serial_number()
    not_before = now - CLOCK_SKEW
    not_after = min(now + ttl, ca.not_after)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service[:64])]))
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    constraints, usage, extended = _leaf_extensions()
    certificate = (
        builder.add_extension(constraints, critical=True)
        .add_extension(usage, critical=True)
        .add_extension(extended, critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
            critical=False,  # RFC 5280: critical only with an empty subject
        )
        .add_extension(_key_id(public), critical=False)
        .add_extension(_authority_key_id_of(ca), critical=False)
        .sign(ca.signing_key, hashes.SHA256())
    )
    return WorkloadIdentity(
        service=service,
        spiffe_id=identity,
        certificate_chain=_pem(certificate) + ca.intermediates,
        private_key=_key_pem(key),
        serial=serial_hex(serial),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ca_info(ca: RootCa) -> dict[str, Any]:
    """What the API, events and logs may show about a CA: never its key."""
    return {
        "subject": ca.subject,
        "fingerprint_sha256": ca.fingerprint,
        "not_before": rfc3339(ca.not_before),
        "not_after": rfc3339(ca.not_after),
        "provider": ca.provider,
    }
