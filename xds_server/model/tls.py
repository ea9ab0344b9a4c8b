"""``TlsPolicy``: how Envoy speaks TLS to clients (``downstream``) and to services (``upstream``).

A listener with ``protocol: https`` names a policy with a ``downstream`` part; a
``ServicePolicy`` names one with an ``upstream`` part (one policy may have both). Certificates
and CA bundles are ``Certificate`` documents, referred to by name; Envoy gets them over SDS,
so replacing a certificate changes nothing but the secret.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from xds_server.model.base import NonEmpty, StrictModel
from xds_server.model.errors import invalid
from xds_server.model.names import HOSTNAME_MATCH_PATTERN, Hostname, HostnameMatch, Name


class TlsVersion(StrEnum):
    TLS1_0 = "1.0"
    TLS1_1 = "1.1"
    TLS1_2 = "1.2"
    TLS1_3 = "1.3"


def _version(value: Any) -> Any:
    """YAML reads ``min_version: 1.2`` as a number: take it as the string it looks like."""
    if isinstance(value, float):
        return f"{value:.1f}"
    return value


Version = Annotated[TlsVersion, BeforeValidator(_version)]

#: The TLS 1.2-and-below cipher suites BoringSSL (so Envoy) accepts by name, OpenSSL-style
#: and IANA-style, without the PSK suites (Envoy configures no pre-shared keys).
CIPHER_SUITES: Final = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-RSA-AES128-SHA256",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
)
_CIPHERS: Final = frozenset(CIPHER_SUITES)
#: TLS 1.3 suites: BoringSSL always enables them and refuses them in a cipher list.
TLS13_CIPHER_SUITES: Final = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
#: How many certificates, SNI entries or names a policy may list (far beyond real use).
MAX_ITEMS: Final = 64


def _check_cipher(value: str) -> str:
    if value in TLS13_CIPHER_SUITES:
        raise invalid(
            "cipher_suite",
            f"{value!r} is a TLS 1.3 cipher suite: Envoy always enables those and they cannot "
            "be listed; cipher_suites choose among TLS 1.2 suites",
        )
    if value not in _CIPHERS:
        raise invalid(
            "cipher_suite",
            f"unknown cipher suite {value!r}: use a name BoringSSL accepts, such as "
            "ECDHE-ECDSA-AES128-GCM-SHA256 or TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        )
    return value


CipherSuite = Annotated[
    str,
    Field(max_length=64, json_schema_extra={"enum": list(CIPHER_SUITES)}),
    AfterValidator(_check_cipher),
]
Alpn = Literal["h2", "http/1.1"]


def _not_catch_all(value: str) -> str:
    if value == "*":
        raise invalid(
            "server_name",
            "'*' matches every name: put those certificates in certificates (the default)",
        )
    return value


#: An SNI name a filter chain answers: exact or ``*.suffix``.
ServerName = Annotated[
    HostnameMatch,
    AfterValidator(_not_catch_all),
    Field(json_schema_extra={"pattern": HOSTNAME_MATCH_PATTERN}),
]


def _unique(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    duplicates = sorted({value for value in values if values.count(value) > 1})
    if duplicates:
        raise invalid("unique", f"{what} listed more than once: {', '.join(duplicates)}")
    return values


def _unique_certificates(values: tuple[str, ...]) -> tuple[str, ...]:
    return _unique(values, "certificates")


CertificateNames = Annotated[
    tuple[Name, ...], Field(max_length=MAX_ITEMS), AfterValidator(_unique_certificates)
]


class SanType(StrEnum):
    DNS = "dns"
    URI = "uri"
    EMAIL = "email"
    IP = "ip"


def _check_match_text(value: str) -> str:
    if any(char in value for char in "\x00\r\n"):
        raise invalid("san", "must not contain NUL, CR or LF")
    return value


MatchText = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_check_match_text)]


class SubjectAltName(StrictModel):
    """A subject alternative name the peer's certificate must have (any listed one will do):
    its ``type`` and exactly one of ``exact``, ``prefix`` or ``suffix``."""

    type: SanType
    exact: MatchText | None = None
    prefix: MatchText | None = None
    suffix: MatchText | None = None

    @model_validator(mode="after")
    def _one(self) -> SubjectAltName:
        if sum(value is not None for value in (self.exact, self.prefix, self.suffix)) != 1:
            raise invalid("one_of", "set exactly one of exact, prefix or suffix")
        return self


SubjectAltNames = Annotated[tuple[SubjectAltName, ...], Field(max_length=MAX_ITEMS)]


class TlsParameters(StrictModel):
    min_version: Version = TlsVersion.TLS1_2
    max_version: Version = TlsVersion.TLS1_3
    #: TLS 1.2-and-below suites in order of preference; empty: Envoy's defaults.
    cipher_suites: Annotated[tuple[CipherSuite, ...], Field(max_length=MAX_ITEMS)] = ()

    @model_validator(mode="after")
    def _versions(self) -> TlsParameters:
        order = list(TlsVersion)
        if order.index(self.min_version) > order.index(self.max_version):
            raise invalid(
                "version_range",
                f"min_version {self.min_version} is above max_version {self.max_version}",
            )
        if self.cipher_suites and self.min_version is TlsVersion.TLS1_3:
            raise invalid(
                "cipher_suites",
                "cipher_suites only apply to TLS 1.2 and below; with min_version 1.3 they "
                "would never be used",
            )
        _unique(self.cipher_suites, "cipher_suites")
        return self


class ForwardDetail(StrEnum):
    """Parts of the client certificate Envoy adds to ``x-forwarded-client-cert``."""

    SUBJECT = "subject"
    URI = "uri"
    DNS = "dns"
    #: The whole certificate, URL-encoded PEM.
    CERT = "cert"
    #: The whole chain, URL-encoded PEM.
    CHAIN = "chain"


class ClientCertificate(StrictModel):
    """Ask clients for a certificate and verify it (mutual TLS)."""

    #: A ``Certificate`` holding a CA bundle: client certificates must chain to one of them.
    ca: Name
    #: ``false``: clients without a certificate are let in; a presented one is still verified.
    required: bool = True
    #: If any are listed, the client certificate must have one of them.
    subject_alt_names: SubjectAltNames = ()
    #: Send these details of the verified client certificate to the upstream service in the
    #: ``x-forwarded-client-cert`` header (Envoy's SANITIZE_SET); empty: the header is removed
    #: from requests (SANITIZE), so clients cannot forge it.
    forward_details: tuple[ForwardDetail, ...] = ()

    @model_validator(mode="after")
    def _unique_details(self) -> ClientCertificate:
        _unique(tuple(self.forward_details), "forward_details")
        return self


class SniCertificates(StrictModel):
    """Certificates for clients that ask for one of ``server_names`` (SNI)."""

    server_names: Annotated[NonEmpty[ServerName], Field(max_length=MAX_ITEMS)]
    certificates: Annotated[
        NonEmpty[Name], Field(max_length=MAX_ITEMS), AfterValidator(_unique_certificates)
    ]


class DownstreamTls(TlsParameters):
    """TLS for clients of a listener.

    Several certificates on one entry (say an RSA and an ECDSA one) are offered side by side:
    Envoy picks by the client's capabilities and the name it asks for.
    """

    #: ``Certificate`` names (key pairs) for clients that send no SNI or one no entry of
    #: ``sni`` lists. Empty: such clients are refused.
    certificates: CertificateNames = ()
    sni: Annotated[tuple[SniCertificates, ...], Field(max_length=MAX_ITEMS)] = ()
    #: Protocols offered in ALPN, in order of preference.
    alpn: tuple[Alpn, ...] = ("h2", "http/1.1")
    client_certificate: ClientCertificate | None = None

    @model_validator(mode="after")
    def _some_certificate(self) -> DownstreamTls:
        if not self.certificates and not self.sni:
            raise invalid("too_short", "list certificates, sni entries, or both")
        _unique(tuple(self.alpn), "alpn protocols")
        names = tuple(name for entry in self.sni for name in entry.server_names)
        _unique(names, "sni server_names")
        return self

    def certificate_names(self) -> tuple[str, ...]:
        """Every key pair this side uses, sorted."""
        names = {*self.certificates, *(c for entry in self.sni for c in entry.certificates)}
        return tuple(sorted(names))


class UpstreamMode(StrEnum):
    #: Envoy verifies the service (if ``ca`` is given).
    SIMPLE = "simple"
    #: And presents ``client_certificate`` to it.
    MUTUAL = "mutual"


class UpstreamTls(TlsParameters):
    """TLS from Envoy to a service (a ``ServicePolicy`` names the policy)."""

    mode: UpstreamMode = UpstreamMode.SIMPLE
    #: The server name sent in the handshake (SNI).
    sni: Hostname | None = None
    #: A ``Certificate`` holding a CA bundle the service's certificate must chain to. Without
    #: it the service's certificate is not verified (the traffic is encrypted only).
    ca: Name | None = None
    #: A ``Certificate`` (key pair) Envoy presents; ``mode: mutual`` only, and required there.
    client_certificate: Name | None = None
    #: The service's certificate must have one of these; when empty and ``sni`` is set (with
    #: ``ca``), it must have ``sni`` as a DNS name.
    subject_alt_names: SubjectAltNames = ()

    @model_validator(mode="after")
    def _mode(self) -> UpstreamTls:
        if self.mode is UpstreamMode.MUTUAL and self.client_certificate is None:
            raise invalid("mutual", "mode mutual needs client_certificate")
        if self.mode is UpstreamMode.SIMPLE and self.client_certificate is not None:
            raise invalid(
                "mutual", "client_certificate is only presented in mode mutual; set mode: mutual"
            )
        if self.subject_alt_names and self.ca is None:
            raise invalid(
                "subject_alt_names",
                "subject_alt_names are verified against a CA: set ca as well",
            )
        return self

    def verified_names(self) -> tuple[SubjectAltName, ...]:
        """What the service's certificate is checked for (none without a CA)."""
        if self.ca is None:
            return ()
        if self.subject_alt_names:
            return self.subject_alt_names
        if self.sni is not None:
            return (SubjectAltName(type=SanType.DNS, exact=self.sni),)
        return ()


class TlsPolicySpec(StrictModel):
    downstream: DownstreamTls | None = None
    upstream: UpstreamTls | None = None

    @model_validator(mode="after")
    def _some_side(self) -> TlsPolicySpec:
        if self.downstream is None and self.upstream is None:
            raise invalid("one_of", "set downstream, upstream, or both")
        return self
