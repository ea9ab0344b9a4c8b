"""The whole operator config: every document by kind and name, immutable.

``created_revision`` is the config revision at which a document was first created; route
precedence uses it as Gateway API uses a route's creation timestamp (older wins ties).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from xds_server.model.auth import AuthPolicySpec
from xds_server.model.certificate import CertificateSpec
from xds_server.model.document import AnyDocument, Kind
from xds_server.model.kinds import document_of, kind_info
from xds_server.model.listener import ListenerSpec
from xds_server.model.mesh import MESH_NAME, IntentionSpec, MeshSpec, SidecarSpec
from xds_server.model.rate_limit import RateLimitPolicySpec
from xds_server.model.retry import RetryPolicySpec
from xds_server.model.route import RouteSpec
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.model.streams import TcpRouteSpec, TlsRouteSpec
from xds_server.model.tls import DownstreamTls, TlsPolicySpec, UpstreamTls

S = TypeVar(
    "S",
    ListenerSpec,
    RouteSpec,
    TcpRouteSpec,
    TlsRouteSpec,
    RetryPolicySpec,
    ServicePolicySpec,
    TlsPolicySpec,
    CertificateSpec,
    AuthPolicySpec,
    RateLimitPolicySpec,
    MeshSpec,
    SidecarSpec,
    IntentionSpec,
)

#: How the store hands documents over: ``(kind, name, spec, created_revision)``.
RawDocument = tuple[str, str, Mapping[str, Any], int]


@dataclass(frozen=True, slots=True)
class Entry(Generic[S]):
    """One parsed document."""

    name: str
    spec: S
    created_revision: int = 0


def _frozen(entries: Mapping[str, Entry[S]]) -> Mapping[str, Entry[S]]:
    return MappingProxyType(dict(sorted(entries.items())))


def _replaced(
    entries: Mapping[str, Entry[Any]], name: str, entry: Entry[Any] | None
) -> Mapping[str, Entry[Any]]:
    """``entries`` with ``name`` set to ``entry`` (``None``: removed), still sorted by name.

    Replacing or removing keeps the order as it is; only a new name needs a sort.
    """
    copy = dict(entries)
    if entry is None:
        copy.pop(name, None)
        return MappingProxyType(copy)
    if name in copy:
        copy[name] = entry
        return MappingProxyType(copy)
    copy[name] = entry
    return _frozen(copy)


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    """Every operator document, by kind then name (each mapping sorted by name)."""

    listeners: Mapping[str, Entry[ListenerSpec]] = field(default_factory=_empty)
    routes: Mapping[str, Entry[RouteSpec]] = field(default_factory=_empty)
    tcp_routes: Mapping[str, Entry[TcpRouteSpec]] = field(default_factory=_empty)
    tls_routes: Mapping[str, Entry[TlsRouteSpec]] = field(default_factory=_empty)
    retry_policies: Mapping[str, Entry[RetryPolicySpec]] = field(default_factory=_empty)
    #: Keyed by the service the policy applies to.
    service_policies: Mapping[str, Entry[ServicePolicySpec]] = field(default_factory=_empty)
    tls_policies: Mapping[str, Entry[TlsPolicySpec]] = field(default_factory=_empty)
    certificates: Mapping[str, Entry[CertificateSpec]] = field(default_factory=_empty)
    auth_policies: Mapping[str, Entry[AuthPolicySpec]] = field(default_factory=_empty)
    rate_limit_policies: Mapping[str, Entry[RateLimitPolicySpec]] = field(default_factory=_empty)
    #: At most one entry, named ``mesh``; no entry means no mesh.
    mesh: Mapping[str, Entry[MeshSpec]] = field(default_factory=_empty)
    #: Keyed by the service the sidecars front.
    sidecars: Mapping[str, Entry[SidecarSpec]] = field(default_factory=_empty)
    intentions: Mapping[str, Entry[IntentionSpec]] = field(default_factory=_empty)

    @staticmethod
    def from_documents(documents: Iterable[RawDocument]) -> Config:
        """Parse raw documents; raise ``InvalidDocuments`` listing every problem found."""
        from xds_server.model.config_parser import ConfigParser  # it builds on this module

        return ConfigParser().config_of(documents)

    @staticmethod
    def of_entries(entries: Mapping[Kind, Mapping[str, Entry[Any]]]) -> Config:
        """A config of parsed entries, by kind then name (kinds left out are empty)."""
        return Config(
            **{kind_info(kind).config_field: _frozen(by_name) for kind, by_name in entries.items()}
        )

    def _entries(self, kind: Kind) -> Mapping[str, Entry[Any]]:
        entries: Mapping[str, Entry[Any]] = getattr(self, kind_info(kind).config_field)
        return entries

    def get(self, kind: Kind | str, name: str) -> Entry[Any] | None:
        return self._entries(Kind(kind)).get(name)

    def with_document(self, document: AnyDocument, created_revision: int | None = None) -> Config:
        """A copy with ``document`` added or replaced.

        An existing document keeps its ``created_revision`` unless one is given.
        """
        kind = Kind(document.kind)
        entries = self._entries(kind)
        previous = entries.get(document.name)
        if created_revision is None:
            created_revision = previous.created_revision if previous is not None else 0
        entry: Entry[Any] = Entry(document.name, document.spec, created_revision)
        changed = _replaced(entries, document.name, entry)
        return replace(self, **{kind_info(kind).config_field: changed})

    def without_document(self, kind: Kind | str, name: str) -> Config:
        kind = Kind(kind)
        entries = self._entries(kind)
        if name not in entries:
            return self
        return replace(self, **{kind_info(kind).config_field: _replaced(entries, name, None)})

    def documents(self) -> Iterator[tuple[AnyDocument, int]]:
        """Every document with its ``created_revision``, by kind then name."""
        for kind in Kind:
            for name, entry in self._entries(kind).items():
                yield document_of(kind, name, entry.spec), entry.created_revision

    @property
    def mesh_spec(self) -> MeshSpec | None:
        """The mesh, if one is configured (a ``Sidecar`` without it gets no mesh config)."""
        entry = self.mesh.get(MESH_NAME)
        return entry.spec if entry is not None else None

    def service_policy(self, service: str) -> ServicePolicySpec | None:
        entry = self.service_policies.get(service)
        return entry.spec if entry is not None else None

    def downstream_tls(self, policy: str | None) -> DownstreamTls | None:
        """The ``downstream`` part of TLS policy ``policy`` (``None`` if either is missing)."""
        entry = self.tls_policies.get(policy) if policy is not None else None
        return entry.spec.downstream if entry is not None else None

    def upstream_tls(self, policy: str | None) -> UpstreamTls | None:
        """The ``upstream`` part of TLS policy ``policy`` (``None`` if either is missing)."""
        entry = self.tls_policies.get(policy) if policy is not None else None
        return entry.spec.upstream if entry is not None else None
