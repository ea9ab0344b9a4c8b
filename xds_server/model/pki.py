"""Certificates and private keys in PEM, parsed and checked with ``cryptography``.

Pure: no I/O and no clock (expiry is checked against a ``now`` the caller passes). What
Envoy (BoringSSL) would refuse is refused here first, with a reason an operator can act on.
No reason, summary or exception raised here ever quotes key material: a reason names the
field and the certificate (by position and subject), never the PEM text.

Results are cached per PEM text: a stored document is parsed again on every config change.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

#: Envoy refuses RSA keys shorter than this.
MIN_RSA_BITS: Final = 2048
#: The ECDSA curves Envoy accepts for certificates.
EC_CURVES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
#: How soon before ``not_after`` a certificate is reported as about to expire.
EXPIRY_WARNING: Final = datetime.timedelta(days=30)

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END ([A-Z0-9 ]+)-----", re.S)
_PRIVATE_KEY_MARK: Final = "PRIVATE KEY"


class PemError(ValueError):
    """PEM text that Envoy would not accept; ``reason`` is safe to show (no key material)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What the API shows about one certificate (all public information)."""

    subject: str
    issuer: str
    subject_alt_names: tuple[str, ...]
    serial_number: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint_sha256: str
    key_type: str
    is_ca: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "subject_alt_names": list(self.subject_alt_names),
            "serial_number": self.serial_number,
            "not_before": _rfc3339(self.not_before),
            "not_after": _rfc3339(self.not_after),
            "fingerprint_sha256": self.fingerprint_sha256,
            "key_type": self.key_type,
            "is_ca": self.is_ca,
        }


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _blocks(text: str) -> list[tuple[str, bytes]]:
    """Every PEM block as ``(label, block bytes)``; text between blocks is ignored (as
    BoringSSL does), but an unterminated block is an error."""
    found = []
    for match in _BLOCK.finditer(text):
        begin, end = match.group(1), match.group(3)
        if begin != end:
            raise PemError(f"a PEM block starts with BEGIN {begin} but ends with END {end}")
        found.append((begin, match.group(0).encode("ascii", errors="replace")))
    return found


def _refuse_private_keys(blocks: list[tuple[str, bytes]], what: str) -> None:
    if any(_PRIVATE_KEY_MARK in label for label, _ in blocks):
        raise PemError(
            f"the {what} contains a private key; a private key belongs in private_key (or "
            "private_key_file) only"
        )


def _name(value: x509.Name) -> str:
    try:
        return value.rfc4514_string()
    except ValueError:  # a malformed attribute: still show something
        return repr(value)


def _key_type(key: Any) -> str:
    """``"RSA 2048"``, ``"ECDSA P-256"``, ``"Ed25519"``; raise ``PemError`` for key types
    and sizes Envoy refuses."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise PemError(
                f"the RSA key has {key.key_size} bits; Envoy requires at least {MIN_RSA_BITS}"
            )
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        curve = EC_CURVES.get(key.curve.name)
        if curve is None:
            raise PemError(
                f"the ECDSA key uses curve {key.curve.name}; Envoy accepts P-256, P-384 and "
                "P-521 only"
            )
        return f"ECDSA {curve}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519"
    raise PemError("the key type is not supported: use RSA (2048 bits or more), ECDSA or Ed25519")


def _san_text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    return f"{type(name).__name__}:{name.value!s}"


def _alt_names(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    except ValueError:  # a malformed extension
        return ()
    return tuple(_san_text(name) for name in extension.value)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def _summary(certificate: x509.Certificate, key_type: str) -> CertificateSummary:
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex().upper()
    return CertificateSummary(
        subject=_name(certificate.subject),
        issuer=_name(certificate.issuer),
        subject_alt_names=_alt_names(certificate),
        serial_number=format(certificate.serial_number, "X"),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint_sha256=":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2)),
        key_type=key_type,
        is_ca=_is_ca(certificate),
    )


@dataclass(frozen=True, slots=True)
class _Parsed:
    certificates: tuple[x509.Certificate, ...]
    summaries: tuple[CertificateSummary, ...]


@lru_cache(maxsize=1024)
def _parse_certificates(text: str, what: str) -> _Parsed:
    blocks = _blocks(text)
    _refuse_private_keys(blocks, what)
    if not blocks:
        raise PemError(f"the {what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    certificates = []
    summaries = []
    for index, (label, data) in enumerate(blocks, start=1):
        if label != "CERTIFICATE":
            raise PemError(
                f"PEM block #{index} of the {what} is a {label}; only CERTIFICATE blocks belong "
                "here"
            )
        try:
            certificate = x509.load_pem_x509_certificate(data)
            public_key = certificate.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise PemError(
                f"certificate #{index} of the {what} is not a valid X.509 certificate"
            ) from None
        try:
            key_type = _key_type(public_key)
        except PemError as error:
            raise PemError(f"certificate #{index} of the {what}: {error.reason}") from None
        certificates.append(certificate)
        summaries.append(_summary(certificate, key_type))
    return _Parsed(tuple(certificates), tuple(summaries))


def certificate_summaries(text: str, what: str = "certificate") -> tuple[CertificateSummary, ...]:
    """Every certificate of a PEM text, in order; raise ``PemError`` if any is not one."""
    return _parse_certificates(text, what).summaries


@lru_cache(maxsize=1024)
def _chain_problem(text: str) -> str | None:
    parsed = _parse_certificates(text, "certificate")
    chain, summaries = parsed.certificates, parsed.summaries
    for index in range(len(chain) - 1):
        child, parent = chain[index], chain[index + 1]
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return (
                f"the chain is out of order: certificate #{index + 1} "
                f"({summaries[index].subject}) is not issued by certificate #{index + 2} "
                f"({summaries[index + 1].subject}); list the leaf first, then each issuer"
            )
    return None


def check_chain(text: str) -> tuple[CertificateSummary, ...]:
    """A certificate chain, leaf first, each certificate issued by the next."""
    summaries = certificate_summaries(text)
    problem = _chain_problem(text)
    if problem is not None:
        raise PemError(problem)
    return summaries


def check_bundle(text: str) -> tuple[CertificateSummary, ...]:
    """A CA bundle: one or more certificates, in any order."""
    return certificate_summaries(text, "CA bundle")


def _load_private_key(text: str) -> Any:
    blocks = _blocks(text)
    keys = [(label, data) for label, data in blocks if _PRIVATE_KEY_MARK in label]
    if len(blocks) != 1 or len(keys) != 1:
        raise PemError(
            "the private key must be exactly one PEM private key block (-----BEGIN PRIVATE "
            "KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
        )
    label, data = keys[0]
    if label == "ENCRYPTED PRIVATE KEY":
        raise PemError("the private key is encrypted; give it unencrypted")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise PemError("the private key is encrypted; give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise PemError("the private key is not a valid PEM private key") from None


@lru_cache(maxsize=1024)
def _key_problem(text: str) -> str | None:
    try:
        _key_type(_load_private_key(text))
    except PemError as error:
        return error.reason
    return None


def check_private_key(text: str) -> None:
    problem = _key_problem(text)
    if problem is not None:
        raise PemError(problem)


def _public_der(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


@lru_cache(maxsize=1024)
def _pair_problem(chain_text: str, key_text: str) -> str | None:
    leaf = _parse_certificates(chain_text, "certificate").certificates[0]
    key = _load_private_key(key_text)
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        return "the private key does not match the certificate (the first one of the chain)"
    return None


def check_key_pair(chain_text: str, key_text: str) -> None:
    """The key belongs to the chain's first certificate. Both must be valid on their own
    (``check_chain``, ``check_private_key``)."""
    problem = _pair_problem(chain_text, key_text)
    if problem is not None:
        raise PemError(problem)


@dataclass(frozen=True, slots=True)
class ExpiryFinding:
    """``expired`` (Envoy would serve a certificate clients reject), else a warning."""

    expired: bool
    reason: str


def expiry_findings(
    summaries: tuple[CertificateSummary, ...], now: datetime.datetime, what: str = "certificate"
) -> list[ExpiryFinding]:
    """Expired, not yet valid, and expiring within ``EXPIRY_WARNING``, per certificate.

    Reasons name dates, not "N days ago", so the same state gives the same reasons all day.
    """
    found = []
    for index, summary in enumerate(summaries, start=1):
        which = f"{what} #{index} ({summary.subject})"
        if summary.not_after <= now:
            found.append(ExpiryFinding(True, f"{which} expired on {_rfc3339(summary.not_after)}"))
        elif summary.not_after - now <= EXPIRY_WARNING:
            days = (summary.not_after - now).days
            found.append(
                ExpiryFinding(
                    False,
                    f"{which} expires on {_rfc3339(summary.not_after)} (in {days} day(s))",
                )
            )
        if summary.not_before > now:
            found.append(
                ExpiryFinding(False, f"{which} is not valid before {_rfc3339(summary.not_before)}")
            )
    return found
