"""Workload identities -> SDS secrets, and the TLS contexts of mesh listeners and clusters.

A sidecar gets two secrets over ADS: its service's certificate and key
(``mesh/identity/<service>``) and the trust bundle (``mesh/trust-bundle``: every root the
mesh trusts, concatenated). Listeners and clusters refer to them by name only, so a
re-issued leaf or a root rotation updates the secrets and drains nothing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from xds_server.model.mesh import MeshProtocol
from xds_server.model.workload import WorkloadIdentity
from xds_server.translate.mesh.names import TRUST_BUNDLE_SECRET, identity_secret_name
from xds_server.translate.protos import ads, pack
from xds_server.translate.tls import TLS_TRANSPORT_SOCKET

#: What each side offers in ALPN: HTTP/2 where the application speaks it.
_ALPN: Final = {
    MeshProtocol.HTTP: ("http/1.1",),
    MeshProtocol.HTTP2: ("h2",),
    MeshProtocol.GRPC: ("h2",),
    MeshProtocol.TCP: (),
}


@lru_cache(maxsize=8192)
def identity_secret(identity: WorkloadIdentity) -> Message:
    """``identity``'s certificate chain and private key, named after its service."""
    result: Message = secret_pb2.Secret(
        name=identity_secret_name(identity.service),
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=identity.certificate_chain),
            private_key=base_pb2.DataSource(inline_string=identity.private_key),
        ),
    )
    return result


@lru_cache(maxsize=16)
def trust_bundle_secret(roots: tuple[str, ...]) -> Message:
    """Every trusted root in one validation context (during a root rotation, old and new)."""
    bundle = "".join(root if root.endswith("\n") else root + "\n" for root in roots)
    result: Message = secret_pb2.Secret(
        name=TRUST_BUNDLE_SECRET,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_string=bundle)
        ),
    )
    return result


@lru_cache(maxsize=16_384)
def _sds(name: str) -> Any:
    """Secret ``name`` over ADS (shared: whoever uses it copies it into their context)."""
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads())


def _uri_san(matcher: Any) -> Any:
    return common_pb2.SubjectAltNameMatcher(
        san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=matcher
    )


def _common(service: str, peer: Any, alpn: tuple[str, ...]) -> Any:
    """Present ``service``'s identity; accept a peer whose URI SAN matches ``peer``, signed
    by a root of the trust bundle."""
    common = tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[_sds(identity_secret_name(service))],
        alpn_protocols=list(alpn),
    )
    combined = common.combined_validation_context
    combined.default_validation_context.match_typed_subject_alt_names.append(_uri_san(peer))
    combined.validation_context_sds_secret_config.CopyFrom(_sds(TRUST_BUNDLE_SECRET))
    return common


def inbound_socket(service: str, trust_domain: str, protocol: MeshProtocol) -> Any:
    """The inbound port's TLS: a client certificate is required, and must carry a SPIFFE ID
    of the trust domain (which service it is, the RBAC filter decides)."""
    alpn = ("h2", "http/1.1") if protocol.is_http else ()
    peer = string_pb2.StringMatcher(prefix=f"spiffe://{trust_domain}/")
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common(service, peer, alpn),
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def outbound_socket(service: str, upstream_id: str, sni: str, protocol: MeshProtocol) -> Any:
    """A connection to an upstream's sidecar: ``service``'s identity as client certificate,
    and the server must be exactly ``upstream_id``."""
    peer = string_pb2.StringMatcher(exact=upstream_id)
    context = tls_pb2.UpstreamTlsContext(
        common_tls_context=_common(service, peer, _ALPN[protocol]), sni=sni
    )
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def cache_clear() -> None:
    """Forget the memoised SDS references and secrets (tests: cold translation)."""
    _sds.cache_clear()
    identity_secret.cache_clear()
    trust_bundle_secret.cache_clear()
