"""The envelope of every operator resource: ``{"kind": ..., "name": ..., "spec": {...}}``.

The same document is accepted by ``PUT``, returned by ``GET`` and listed in ``apply``.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Final, Literal

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from xds_server.model.auth import AuthPolicySpec
from xds_server.model.base import StrictModel
from xds_server.model.certificate import CertificateSpec
from xds_server.model.listener import ListenerSpec
from xds_server.model.mesh import IntentionSpec, MeshSpec, SidecarSpec
from xds_server.model.names import Name
from xds_server.model.problems import InvalidDocuments, Problem, problems_from
from xds_server.model.rate_limit import RateLimitPolicySpec
from xds_server.model.retry import RetryPolicySpec
from xds_server.model.route import RouteSpec
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.model.streams import TcpRouteSpec, TlsRouteSpec
from xds_server.model.tls import TlsPolicySpec


class Kind(StrEnum):
    LISTENER = "Listener"
    ROUTE = "Route"
    TCP_ROUTE = "TcpRoute"
    TLS_ROUTE = "TlsRoute"
    RETRY_POLICY = "RetryPolicy"
    SERVICE_POLICY = "ServicePolicy"
    TLS_POLICY = "TlsPolicy"
    CERTIFICATE = "Certificate"
    AUTH_POLICY = "AuthPolicy"
    RATE_LIMIT_POLICY = "RateLimitPolicy"
    MESH = "Mesh"
    SIDECAR = "Sidecar"
    INTENTION = "Intention"


_KINDS: Final = frozenset(kind.value for kind in Kind)
#: Why a document's ``kind`` is refused.
KIND_REASON: Final = "kind must be one of " + ", ".join(kind.value for kind in Kind)

Spec = (
    ListenerSpec
    | RouteSpec
    | TcpRouteSpec
    | TlsRouteSpec
    | RetryPolicySpec
    | ServicePolicySpec
    | TlsPolicySpec
    | CertificateSpec
    | AuthPolicySpec
    | RateLimitPolicySpec
    | MeshSpec
    | SidecarSpec
    | IntentionSpec
)


class ListenerDocument(StrictModel):
    kind: Literal["Listener"]
    name: Name
    spec: ListenerSpec


class RouteDocument(StrictModel):
    kind: Literal["Route"]
    name: Name
    spec: RouteSpec


class TcpRouteDocument(StrictModel):
    """Every connection of its ``tcp`` listeners to weighted backends."""

    kind: Literal["TcpRoute"]
    name: Name
    spec: TcpRouteSpec


class TlsRouteDocument(StrictModel):
    """TLS connections of its ``tls`` listeners, by SNI, passed through to backends."""

    kind: Literal["TlsRoute"]
    name: Name
    spec: TlsRouteSpec


class RetryPolicyDocument(StrictModel):
    kind: Literal["RetryPolicy"]
    name: Name
    spec: RetryPolicySpec


class ServicePolicyDocument(StrictModel):
    """``name`` is the registry service the policy applies to."""

    kind: Literal["ServicePolicy"]
    name: Name
    spec: ServicePolicySpec


class TlsPolicyDocument(StrictModel):
    kind: Literal["TlsPolicy"]
    name: Name
    spec: TlsPolicySpec


class CertificateDocument(StrictModel):
    """A key pair or a CA bundle; the private key is write-only."""

    kind: Literal["Certificate"]
    name: Name
    spec: CertificateSpec


class AuthPolicyDocument(StrictModel):
    """JWT authentication: trusted issuers and where their tokens are required."""

    kind: Literal["AuthPolicy"]
    name: Name
    spec: AuthPolicySpec


class RateLimitPolicyDocument(StrictModel):
    """A token bucket for the requests of listeners and route rules."""

    kind: Literal["RateLimitPolicy"]
    name: Name
    spec: RateLimitPolicySpec


class MeshDocument(StrictModel):
    """The one mesh-wide document (its name is always ``mesh``)."""

    kind: Literal["Mesh"]
    name: Literal["mesh"]
    spec: MeshSpec


class SidecarDocument(StrictModel):
    """``name`` is the registry service whose sidecars this configures."""

    kind: Literal["Sidecar"]
    name: Name
    spec: SidecarSpec


class IntentionDocument(StrictModel):
    kind: Literal["Intention"]
    name: Name
    spec: IntentionSpec


AnyDocument = (
    ListenerDocument
    | RouteDocument
    | TcpRouteDocument
    | TlsRouteDocument
    | RetryPolicyDocument
    | ServicePolicyDocument
    | TlsPolicyDocument
    | CertificateDocument
    | AuthPolicyDocument
    | RateLimitPolicyDocument
    | MeshDocument
    | SidecarDocument
    | IntentionDocument
)


def _kind_of(value: Any) -> str | None:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    # ``kind`` may be any JSON value (a list, say): only a known string selects a model.
    return kind if isinstance(kind, str) and kind in _KINDS else None


#: Any document, told apart by ``kind`` (for request bodies and ``apply``).
Document = Annotated[
    Annotated[ListenerDocument, Tag("Listener")]
    | Annotated[RouteDocument, Tag("Route")]
    | Annotated[TcpRouteDocument, Tag("TcpRoute")]
    | Annotated[TlsRouteDocument, Tag("TlsRoute")]
    | Annotated[RetryPolicyDocument, Tag("RetryPolicy")]
    | Annotated[ServicePolicyDocument, Tag("ServicePolicy")]
    | Annotated[TlsPolicyDocument, Tag("TlsPolicy")]
    | Annotated[CertificateDocument, Tag("Certificate")]
    | Annotated[AuthPolicyDocument, Tag("AuthPolicy")]
    | Annotated[RateLimitPolicyDocument, Tag("RateLimitPolicy")]
    | Annotated[MeshDocument, Tag("Mesh")]
    | Annotated[SidecarDocument, Tag("Sidecar")]
    | Annotated[IntentionDocument, Tag("Intention")],
    Discriminator(_kind_of, custom_error_type="kind", custom_error_message=KIND_REASON),
]


@cache
def document_adapter() -> TypeAdapter[AnyDocument]:
    """Built on first use, not at import."""
    return TypeAdapter(Document)


def parse_document(raw: Any) -> AnyDocument:
    """Parse one ``{kind, name, spec}`` document; raise ``InvalidDocuments`` naming fields."""
    try:
        return document_adapter().validate_python(raw)
    except ValidationError as error:
        kind = str(raw.get("kind", "")) if isinstance(raw, dict) else ""
        name = str(raw.get("name", "")) if isinstance(raw, dict) else ""
        problems = []
        for problem in problems_from(error, kind, name):
            field = problem.field
            # The discriminated union puts the kind tag first in the location: drop it.
            if kind in _KINDS and field.startswith(f"{kind}."):
                field = field[len(kind) + 1 :]
            elif not field:
                field = "kind"
            problems.append(Problem(problem.kind, problem.name, field, problem.reason))
        raise InvalidDocuments(problems) from None


def parse_spec(kind: str, name: str, spec: Any) -> Spec:
    """Parse a document given as parts (how the store keeps it); raise ``InvalidDocuments``."""
    return parse_document({"kind": kind, "name": name, "spec": spec}).spec
