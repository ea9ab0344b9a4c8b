"""The table of kinds: what each kind of operator document is called and where it lives.

One row per kind: its name (``Route``), its REST collection (``/v1/routes``, also its plural)
and singular (``route``, what the command line accepts too), the ``Config`` field holding its
entries, and its document and spec models. The model, the admin API, the command line and the
store all read this table; adding a kind adds a row here (and its model module, its
``Config`` field and its member of the document unions, which typing needs spelled out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel

from xds_server.model import document as doc
from xds_server.model.document import KIND_REASON, AnyDocument, Kind, Spec
from xds_server.model.mesh import MESH_NAME
from xds_server.model.problems import InvalidDocuments, Problem


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: Kind
    #: The URL segment (``/v1/{path}``) and the plural: ``retry-policies``.
    path: str
    #: ``retry-policy``.
    singular: str
    #: The attribute of ``model.Config`` holding this kind's entries.
    config_field: str
    #: The ``{kind, name, spec}`` model.
    document_model: type[AnyDocument]
    #: What the kind is for, in a sentence or two (the API reference shows it).
    summary: str
    #: The one document's name, for a kind that has exactly one (``Mesh``): it lives at
    #: ``/v1/{path}`` itself, with no list and no name in its URL.
    singleton: str | None = None

    def url(self, name: str) -> str:
        """Where document ``name`` of this kind is read and written."""
        return f"/v1/{self.path}" if self.singleton is not None else f"/v1/{self.path}/{name}"

    @property
    def spec_model(self) -> type[BaseModel]:
        annotation = self.document_model.model_fields["spec"].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        return annotation


#: Every kind, in the order of the API reference.
KINDS: Final[tuple[KindInfo, ...]] = (
    KindInfo(
        Kind.LISTENER,
        "listeners",
        "listener",
        "listeners",
        doc.ListenerDocument,
        "An address and port on which a proxy group accepts HTTP traffic, TCP connections "
        "(tcp) or TLS passed through by SNI (tls).",
    ),
    KindInfo(
        Kind.ROUTE,
        "routes",
        "route",
        "routes",
        doc.RouteDocument,
        "Which requests on which listeners go to which services.",
    ),
    KindInfo(
        Kind.TCP_ROUTE,
        "tcp-routes",
        "tcp-route",
        "tcp_routes",
        doc.TcpRouteDocument,
        "Which services the connections of tcp listeners go to (weighted).",
    ),
    KindInfo(
        Kind.TLS_ROUTE,
        "tls-routes",
        "tls-route",
        "tls_routes",
        doc.TlsRouteDocument,
        "Which services the TLS connections of tls listeners go to, by server name (SNI), "
        "passed through without terminating TLS.",
    ),
    KindInfo(
        Kind.RETRY_POLICY,
        "retry-policies",
        "retry-policy",
        "retry_policies",
        doc.RetryPolicyDocument,
        "When and how Envoy retries a request; routes use it by name.",
    ),
    KindInfo(
        Kind.SERVICE_POLICY,
        "service-policies",
        "service-policy",
        "service_policies",
        doc.ServicePolicyDocument,
        "How Envoy talks to one registry service (named like the service).",
    ),
    KindInfo(
        Kind.TLS_POLICY,
        "tls-policies",
        "tls-policy",
        "tls_policies",
        doc.TlsPolicyDocument,
        "How Envoy speaks TLS to clients of https listeners (downstream) and to services "
        "(upstream).",
    ),
    KindInfo(
        Kind.CERTIFICATE,
        "certificates",
        "certificate",
        "certificates",
        doc.CertificateDocument,
        "A certificate chain with its private key (write-only: never shown), or a CA "
        "bundle; inline PEM or file paths. Reads add info: subject, SANs, issuer, "
        "validity and fingerprint.",
    ),
    KindInfo(
        Kind.AUTH_POLICY,
        "auth-policies",
        "auth-policy",
        "auth_policies",
        doc.AuthPolicyDocument,
        "JWT authentication (OAuth2/OIDC tokens): the issuers trusted, and the listeners "
        "on which every request needs a token; route rules may require it, require "
        "claims, or opt out.",
    ),
    KindInfo(
        Kind.RATE_LIMIT_POLICY,
        "rate-limit-policies",
        "rate-limit-policy",
        "rate_limit_policies",
        doc.RateLimitPolicyDocument,
        "A local (per Envoy) token bucket for the requests of listeners and route rules, "
        "optionally one per header value or client address.",
    ),
    KindInfo(
        Kind.MESH,
        "mesh",
        "mesh",
        "mesh",
        doc.MeshDocument,
        "The service mesh, one document: trust domain, mutual TLS mode, what happens to calls "
        "no intention covers, certificate lifetime and the CA (built-in or provided).",
        singleton=MESH_NAME,
    ),
    KindInfo(
        Kind.SIDECAR,
        "sidecars",
        "sidecar",
        "sidecars",
        doc.SidecarDocument,
        "The Envoy sidecars of one registry service (named like it): their proxy groups, "
        "public mutual-TLS port and local application, and the upstreams it calls.",
    ),
    KindInfo(
        Kind.INTENTION,
        "intentions",
        "intention",
        "intentions",
        doc.IntentionDocument,
        "Whether a source service may call a destination service: allow or deny, or L7 "
        "permissions (paths, methods, headers) evaluated in order.",
    ),
)

_BY_KIND: Final = {info.kind: info for info in KINDS}


def kind_info(kind: Kind | str) -> KindInfo:
    """The row of a kind (``Kind.ROUTE`` or ``"Route"``); ``ValueError`` for an unknown one."""
    return _BY_KIND[Kind(kind)]


def kind_named(text: str) -> KindInfo | None:
    """The kind by its name (``Route``) or URL segment (``routes``)."""
    for info in KINDS:
        if text in (info.kind.value, info.path):
            return info
    return None


def document_of(kind: str, name: str, spec: Spec) -> AnyDocument:
    """The envelope around an already parsed spec (of the kind its type says)."""
    for info in KINDS:
        if isinstance(spec, info.spec_model):
            return info.document_model.model_validate(
                {"kind": info.kind.value, "name": name, "spec": spec}
            )
    raise InvalidDocuments([Problem(kind, name, "kind", KIND_REASON)])
