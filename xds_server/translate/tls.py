"""``Certificate`` and ``TlsPolicy`` documents -> SDS ``Secret``\\ s and TLS transport sockets.

Every certificate goes to Envoy as one secret named ``certificate/<document name>``, over the
ADS stream (SDS). Listeners and clusters refer to secrets by that name only, so replacing a
certificate (a new PEM, a rotated file) changes the secret and nothing else: no listener is
drained, no cluster rebuilt.

Inline PEM becomes ``inline_string`` data sources; file paths become ``filename`` data
sources, which Envoy reads and watches itself (replace the files to rotate).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from xds_server.model.certificate import CertificateSpec
from xds_server.model.service_policy import UpstreamProtocol
from xds_server.model.tls import (
    DownstreamTls,
    SanType,
    SubjectAltName,
    TlsParameters,
    TlsVersion,
    UpstreamMode,
    UpstreamTls,
)
from xds_server.translate.protos import ads, pack

TLS_TRANSPORT_SOCKET: Final = "envoy.transport_sockets.tls"
SECRET_PREFIX: Final = "certificate/"

_VERSION: Final = {
    TlsVersion.TLS1_0: common_pb2.TlsParameters.TLSv1_0,
    TlsVersion.TLS1_1: common_pb2.TlsParameters.TLSv1_1,
    TlsVersion.TLS1_2: common_pb2.TlsParameters.TLSv1_2,
    TlsVersion.TLS1_3: common_pb2.TlsParameters.TLSv1_3,
}
_SAN_TYPE: Final = {
    SanType.DNS: common_pb2.SubjectAltNameMatcher.DNS,
    SanType.URI: common_pb2.SubjectAltNameMatcher.URI,
    SanType.EMAIL: common_pb2.SubjectAltNameMatcher.EMAIL,
    SanType.IP: common_pb2.SubjectAltNameMatcher.IP_ADDRESS,
}
_UPSTREAM_ALPN: Final = {
    UpstreamProtocol.HTTP1: ("http/1.1",),
    UpstreamProtocol.HTTP2: ("h2",),
    UpstreamProtocol.GRPC: ("h2",),
}


def secret_name(certificate: str) -> str:
    """The SDS name of ``Certificate`` ``certificate``: stable, so rotation is a secret update."""
    return SECRET_PREFIX + certificate


def _data(inline: str | None, path: str | None) -> Any:
    if path is not None:
        return base_pb2.DataSource(filename=path)
    return base_pb2.DataSource(inline_string=inline or "")


@lru_cache(maxsize=1024)
def secret(name: str, spec: CertificateSpec) -> Message:
    """The SDS secret of ``Certificate`` ``name``: a TLS certificate or a validation context."""
    result = secret_pb2.Secret(name=secret_name(name))
    if spec.ca_bundle is not None or spec.ca_bundle_file is not None:
        result.validation_context.CopyFrom(
            common_pb2.CertificateValidationContext(
                trusted_ca=_data(spec.ca_bundle, spec.ca_bundle_file)
            )
        )
    else:
        result.tls_certificate.CopyFrom(
            common_pb2.TlsCertificate(
                certificate_chain=_data(spec.certificate, spec.certificate_file),
                private_key=_data(spec.private_key, spec.private_key_file),
            )
        )
    message: Message = result
    return message


def _sds(certificate: str) -> Any:
    return secret_pb2.SdsSecretConfig(name=secret_name(certificate), sds_config=ads())


def _parameters(settings: TlsParameters) -> Any:
    return common_pb2.TlsParameters(
        tls_minimum_protocol_version=_VERSION[settings.min_version],
        tls_maximum_protocol_version=_VERSION[settings.max_version],
        cipher_suites=list(settings.cipher_suites),
    )


def _san_matcher(name: SubjectAltName) -> Any:
    matcher = string_pb2.StringMatcher()
    if name.exact is not None:
        matcher.exact = name.exact
    elif name.prefix is not None:
        matcher.prefix = name.prefix
    elif name.suffix is not None:
        matcher.suffix = name.suffix
    return common_pb2.SubjectAltNameMatcher(san_type=_SAN_TYPE[name.type], matcher=matcher)


def _verify(common: Any, ca: str, names: tuple[SubjectAltName, ...]) -> None:
    """Trust ``ca`` (over SDS); with ``names``, also require one of them in the peer's SANs
    (kept in the listener or cluster, so the secret stays a plain CA bundle)."""
    if not names:
        common.validation_context_sds_secret_config.CopyFrom(_sds(ca))
        return
    combined = common.combined_validation_context
    combined.default_validation_context.match_typed_subject_alt_names.extend(
        _san_matcher(name) for name in names
    )
    combined.validation_context_sds_secret_config.CopyFrom(_sds(ca))


def downstream_certificates(tls: DownstreamTls) -> tuple[str, ...]:
    """Every ``Certificate`` a listener with ``tls`` uses (key pairs and the client CA)."""
    names = set(tls.certificate_names())
    if tls.client_certificate is not None:
        names.add(tls.client_certificate.ca)
    return tuple(sorted(names))


def upstream_certificates(tls: UpstreamTls) -> tuple[str, ...]:
    """Every ``Certificate`` a cluster with ``tls`` uses."""
    names = {name for name in (tls.ca, tls.client_certificate) if name is not None}
    return tuple(sorted(names))


def downstream_socket(tls: DownstreamTls, certificates: tuple[str, ...]) -> Any:
    """The transport socket of a filter chain presenting ``certificates``."""
    common = tls_pb2.CommonTlsContext(
        tls_params=_parameters(tls),
        tls_certificate_sds_secret_configs=[_sds(name) for name in certificates],
        alpn_protocols=list(tls.alpn),
    )
    client = tls.client_certificate
    if client is not None:
        _verify(common, client.ca, client.subject_alt_names)
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    if client is not None:
        context.require_client_certificate.CopyFrom(wrappers_pb2.BoolValue(value=client.required))
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def upstream_socket(tls: UpstreamTls, protocol: UpstreamProtocol) -> Any:
    """The transport socket of a cluster speaking TLS to its service."""
    common = tls_pb2.CommonTlsContext(
        tls_params=_parameters(tls), alpn_protocols=list(_UPSTREAM_ALPN[protocol])
    )
    if tls.mode is UpstreamMode.MUTUAL and tls.client_certificate is not None:
        common.tls_certificate_sds_secret_configs.append(_sds(tls.client_certificate))
    if tls.ca is not None:
        _verify(common, tls.ca, tls.verified_names())
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    if tls.sni is not None:
        context.sni = tls.sni
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context))
