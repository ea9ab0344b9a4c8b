"""What the REST API adds to each kind of the model's table (``model.KINDS``).

Everything else (routes, validation, history) is generic over a :class:`ResourceKind`: a row of
the model's table, plus the kind's list filters, and ``redact`` for write-only fields (a
certificate's private key is accepted by ``PUT`` and never returned by any read, list,
history entry or write result) and ``describe`` for read-only ``info``. A kind with none of
these needs nothing here.

A *singleton* kind (``Mesh``) has exactly one document, at ``/v1/{path}`` itself: no list and
no names in its URLs (``singleton`` is the name it is stored under); its ``status`` is a
read-only block that ``GET`` adds from a source the wiring injects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel

from xds_server.admin.certificates import (
    CertificateInfo,
    describe_certificate,
    redact_certificate,
)
from xds_server.admin.mesh_status import MeshStatus, MeshStatusSource
from xds_server.model import (
    KINDS,
    AuthPolicySpec,
    Kind,
    KindInfo,
    ListenerSpec,
    RateLimitPolicySpec,
    RouteSpec,
    ServicePolicySpec,
    TlsPolicySpec,
)
from xds_server.model import kind_named as model_kind_named
from xds_server.model.mesh import IntentionSpec, SidecarSpec
from xds_server.model.streams import StreamRouteSpec, TlsRouteSpec

if TYPE_CHECKING:
    from xds_server.admin.context import AdminContext


@dataclass(frozen=True, slots=True)
class ListFilter:
    """A ``GET`` list query parameter: keeps the documents whose parsed spec ``matches``."""

    param: str
    description: str
    matches: Callable[[Any, str], bool]


def _as_is(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return spec


@dataclass(frozen=True, slots=True)
class ResourceKind:
    info: KindInfo
    filters: tuple[ListFilter, ...] = ()
    #: The spec as it may leave the server (write-only fields removed).
    redact: Callable[[Mapping[str, Any]], Mapping[str, Any]] = _as_is
    #: Read-only ``info`` that reads add (computed from the stored spec), and its schema.
    describe: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    info_model: type[BaseModel] | None = None
    #: Where ``GET`` finds the read-only ``status`` it adds (in the injected context), and its
    #: schema.
    status_source: Callable[[AdminContext], MeshStatusSource | None] | None = None
    status_model: type[BaseModel] | None = None

    @property
    def kind(self) -> Kind:
        return self.info.kind

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def singleton(self) -> str | None:
        """The one document's name, for a kind that has exactly one (``/v1/{path}``)."""
        return self.info.singleton

    def url(self, name: str) -> str:
        """Where the document ``name`` is read and written."""
        return self.info.url(name)

    def describe_missing(self, name: str) -> str:
        if self.singleton is not None:
            return f"no {self.kind.value} is configured (PUT /v1/{self.path} to create it)"
        return f"there is no {self.kind.value} named {name!r}"


def _route_has_listener(spec: RouteSpec, value: str) -> bool:
    return value in spec.listeners


def _route_sends_to(spec: RouteSpec, value: str) -> bool:
    return any(value in rule.services for rule in spec.rules)


def _route_has_hostname(spec: RouteSpec, value: str) -> bool:
    return value in spec.hostnames


def _stream_route_has_listener(spec: StreamRouteSpec, value: str) -> bool:
    return value in spec.listeners


def _stream_route_sends_to(spec: StreamRouteSpec, value: str) -> bool:
    return any(backend.service == value for backend in spec.backends)


def _tls_route_has_hostname(spec: TlsRouteSpec, value: str) -> bool:
    return value in spec.hostnames


def _listener_for_group(spec: ListenerSpec, value: str) -> bool:
    return spec.delivered_to(value)


def _listener_uses_policy(spec: ListenerSpec, value: str) -> bool:
    return spec.tls_policy == value


def _service_policy_uses_tls(spec: ServicePolicySpec, value: str) -> bool:
    return spec.tls_policy == value


def _tls_policy_uses_certificate(spec: TlsPolicySpec, value: str) -> bool:
    used: set[str] = set()
    if spec.downstream is not None:
        used.update(spec.downstream.certificate_names())
        if spec.downstream.client_certificate is not None:
            used.add(spec.downstream.client_certificate.ca)
    if spec.upstream is not None:
        used.update(n for n in (spec.upstream.ca, spec.upstream.client_certificate) if n)
    return value in used


def _policy_on_listener(spec: AuthPolicySpec | RateLimitPolicySpec, value: str) -> bool:
    return value in spec.listeners


def _sidecar_in_group(spec: SidecarSpec, value: str) -> bool:
    # An empty ``groups`` means the group named like the service, which the spec does not
    # know; such sidecars are found by name (GET /v1/sidecars/{service}).
    return value in spec.groups


def _sidecar_calls(spec: SidecarSpec, value: str) -> bool:
    return any(upstream.service == value for upstream in spec.upstreams)


def _intention_from(spec: IntentionSpec, value: str) -> bool:
    return spec.source == value


def _intention_to(spec: IntentionSpec, value: str) -> bool:
    return spec.destination == value


_ON_LISTENER: Final = ListFilter(
    "listener", "Only policies applying to every request of this listener.", _policy_on_listener
)
_FILTERS: Final[Mapping[Kind, tuple[ListFilter, ...]]] = {
    Kind.LISTENER: (
        ListFilter(
            "group",
            "Only listeners an Envoy of this proxy group gets (those listing it, and those for "
            "every group).",
            _listener_for_group,
        ),
        ListFilter("tls_policy", "Only listeners using this TLS policy.", _listener_uses_policy),
    ),
    Kind.ROUTE: (
        ListFilter("listener", "Only routes attached to this listener.", _route_has_listener),
        ListFilter(
            "service",
            "Only routes sending to this service (as a backend or a mirror).",
            _route_sends_to,
        ),
        ListFilter("hostname", "Only routes listing exactly this hostname.", _route_has_hostname),
    ),
    Kind.TCP_ROUTE: (
        ListFilter("listener", "Only TCP routes of this listener.", _stream_route_has_listener),
        ListFilter("service", "Only TCP routes sending to this service.", _stream_route_sends_to),
    ),
    Kind.TLS_ROUTE: (
        ListFilter("listener", "Only TLS routes of this listener.", _stream_route_has_listener),
        ListFilter("service", "Only TLS routes sending to this service.", _stream_route_sends_to),
        ListFilter(
            "hostname", "Only TLS routes listing exactly this hostname.", _tls_route_has_hostname
        ),
    ),
    Kind.SERVICE_POLICY: (
        ListFilter(
            "tls_policy", "Only service policies using this TLS policy.", _service_policy_uses_tls
        ),
    ),
    Kind.TLS_POLICY: (
        ListFilter(
            "certificate",
            "Only TLS policies using this certificate (or CA bundle).",
            _tls_policy_uses_certificate,
        ),
    ),
    Kind.AUTH_POLICY: (_ON_LISTENER,),
    Kind.RATE_LIMIT_POLICY: (_ON_LISTENER,),
    Kind.SIDECAR: (
        ListFilter("group", "Only sidecars listing this proxy group.", _sidecar_in_group),
        ListFilter("upstream", "Only sidecars calling this service.", _sidecar_calls),
    ),
    Kind.INTENTION: (
        ListFilter("source", "Only intentions from this source ('*' included).", _intention_from),
        ListFilter("destination", "Only intentions to this service.", _intention_to),
    ),
}


def _with_extras(info: KindInfo) -> ResourceKind:
    filters = _FILTERS.get(info.kind, ())
    if info.kind is Kind.CERTIFICATE:
        return ResourceKind(
            info,
            filters,
            redact=redact_certificate,
            describe=describe_certificate,
            info_model=CertificateInfo,
        )
    if info.kind is Kind.MESH:
        return ResourceKind(
            info,
            status_source=_mesh_status_source,
            status_model=MeshStatus,
        )
    return ResourceKind(info, filters)


def _mesh_status_source(context: AdminContext) -> MeshStatusSource | None:
    return context.mesh_status


@cache
def resource_kinds() -> tuple[ResourceKind, ...]:
    """Every kind, in the order of the API reference."""
    return tuple(_with_extras(info) for info in KINDS)


def kind_named(kind: str) -> ResourceKind | None:
    """The kind by its name (``Route``) or URL segment (``routes``)."""
    info = model_kind_named(kind)
    if info is None:
        return None
    return next(resource for resource in resource_kinds() if resource.info is info)


def redact(kind: str, spec: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``spec`` as it may be shown, for a document of any kind.

    A kind this version does not know (written by a newer one) is not shown at all: it may
    have write-only fields this version cannot tell apart."""
    resource = kind_named(kind)
    if spec is None or resource is None:
        return None
    return resource.redact(spec)
