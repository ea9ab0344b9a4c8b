"""The service mesh: ``Mesh`` (one document), ``Sidecar`` (per service) and ``Intention``.

Modelled on Consul Connect: each service's instances run an Envoy sidecar; a sidecar accepts
mutual TLS on its public ``inbound`` port and hands the call to the local application, and
it listens on ``127.0.0.1`` for each ``upstream`` the application calls. Every sidecar proves
who it is with a SPIFFE certificate issued by the mesh CA (``spiffe://<trust_domain>/service/
<name>``); ``Intention`` documents say which services may call which (Envoy RBAC on the
destination's inbound listener, matched on the caller's URI SAN).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from xds_server.model.base import StrictModel
from xds_server.model.duration import Duration
from xds_server.model.errors import invalid
from xds_server.model.http import HttpMethod, Path
from xds_server.model.listener import IpAddress
from xds_server.model.names import GroupName, Name, ServiceName
from xds_server.model.route import HeaderMatch

#: The one ``Mesh`` document's name (``PUT /v1/mesh`` needs none).
MESH_NAME: Final = "mesh"
#: Issued certificates live at least this long (so tests can rotate), at most a year.
MIN_CERTIFICATE_TTL: Final = Duration.parse("1m")
MAX_CERTIFICATE_TTL: Final = Duration.parse("8760h")
_TRUST_DOMAIN: Final = re.compile(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)
TRUST_DOMAIN_PATTERN: Final = _TRUST_DOMAIN.pattern


#: The SDS secrets holding workload identities are named this, then the service.
IDENTITY_SECRET_PREFIX: Final = "mesh/identity/"


def identity_secret_name(service: str) -> str:
    """The SDS secret holding ``service``'s certificate chain and key."""
    return IDENTITY_SECRET_PREFIX + service


def spiffe_id(trust_domain: str, service: str) -> str:
    """The SPIFFE ID of ``service``'s workloads (Consul's form, without namespace)."""
    return f"spiffe://{trust_domain}/service/{service}"


def _check_trust_domain(value: str) -> str:
    if len(value) > 255 or not _TRUST_DOMAIN.fullmatch(value):
        raise invalid(
            "trust_domain",
            "a trust domain is a lowercase DNS name (letters, digits, '-' and '.'), e.g."
            " 'mesh.example.com'",
        )
    return value


TrustDomain = Annotated[
    str,
    AfterValidator(_check_trust_domain),
    Field(json_schema_extra={"pattern": TRUST_DOMAIN_PATTERN}),
]


class MtlsMode(StrEnum):
    """``strict``: inbound ports accept mutual TLS only; ``permissive`` also plain text (for a
    migration; plain-text calls carry no identity, so intentions cannot apply to them)."""

    STRICT = "strict"
    PERMISSIVE = "permissive"


class Action(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class CaProvider(StrEnum):
    """``builtin``: an ECDSA P-256 root generated on first use and kept in the config store;
    ``provided``: a ``Certificate`` (key pair) holding a CA certificate and its key."""

    BUILTIN = "builtin"
    PROVIDED = "provided"


class MeshCa(StrictModel):
    provider: CaProvider = CaProvider.BUILTIN
    #: ``provided`` only: the ``Certificate`` (key pair) whose certificate is the CA.
    certificate: Name | None = None

    @model_validator(mode="after")
    def _certificate_for_provided(self) -> MeshCa:
        if self.provider is CaProvider.PROVIDED and self.certificate is None:
            raise invalid("certificate", "a provided CA names the Certificate holding it")
        if self.provider is CaProvider.BUILTIN and self.certificate is not None:
            raise invalid("certificate", "only a provided CA names a Certificate")
        return self


def _check_ttl(value: Duration) -> Duration:
    if value.milliseconds < MIN_CERTIFICATE_TTL.milliseconds:
        raise invalid("duration", "certificate_ttl must be at least 1m")
    if value.milliseconds > MAX_CERTIFICATE_TTL.milliseconds:
        raise invalid("duration", "certificate_ttl must be at most 8760h (a year)")
    return value


class MeshSpec(StrictModel):
    trust_domain: TrustDomain = "mesh.local"
    mtls: MtlsMode = MtlsMode.STRICT
    #: What happens to a call no intention covers.
    default_action: Action = Action.DENY
    #: Lifetime of the workload certificates; each is re-issued at half of it.
    certificate_ttl: Annotated[Duration, AfterValidator(_check_ttl)] = Duration.parse("24h")
    ca: MeshCa = MeshCa()


@dataclass(frozen=True, slots=True)
class RootRotationRefused:
    """Why ``POST /v1/mesh/rotate-root`` cannot start a rotation (the API answers 409)."""

    #: A slug for the problem's ``type``: ``no-mesh``, ``provided-ca``,
    #: ``rotation-in-progress``, ``no-root``.
    code: str
    reason: str


class MeshProtocol(StrEnum):
    """What the application speaks: ``http``/``http2``/``grpc`` get HTTP routing, retries and
    L7 intentions; ``tcp`` is proxied as bytes (network RBAC only)."""

    HTTP = "http"
    HTTP2 = "http2"
    GRPC = "grpc"
    TCP = "tcp"

    @property
    def is_http(self) -> bool:
        return self is not MeshProtocol.TCP


Port = Annotated[int, Field(ge=1, le=65535)]


class Inbound(StrictModel):
    """The sidecar's public port (mutual TLS) and the local application behind it."""

    port: Port
    local_address: IpAddress = "127.0.0.1"
    local_port: Port
    protocol: MeshProtocol = MeshProtocol.HTTP


class Upstream(StrictModel):
    """A service the application calls, on ``127.0.0.1:local_port`` of its own sidecar."""

    service: ServiceName
    local_port: Port
    protocol: MeshProtocol = MeshProtocol.HTTP


class SidecarSpec(StrictModel):
    """``name`` is the registry service the sidecars front."""

    #: The proxy groups (``node.cluster``) of this service's sidecars; empty means the group
    #: named like the service.
    groups: tuple[GroupName, ...] = ()
    inbound: Inbound
    upstreams: tuple[Upstream, ...] = ()

    @model_validator(mode="after")
    def _distinct_ports(self) -> SidecarSpec:
        seen: dict[int, str] = {}
        for index, upstream in enumerate(self.upstreams):
            where = f"upstreams[{index}]"
            if upstream.local_port in seen:
                raise invalid(
                    "local_port",
                    f"{where}.local_port {upstream.local_port} is already used by"
                    f" {seen[upstream.local_port]}",
                )
            seen[upstream.local_port] = where
        services = [u.service for u in self.upstreams]
        if len(set(services)) != len(services):
            raise invalid("service", "each upstream service is listed once")
        return self

    def groups_for(self, service: str) -> tuple[str, ...]:
        return self.groups or (service,)


class HttpPermission(StrictModel):
    """An L7 match: all that are given must hold (a path, methods, headers)."""

    path_exact: Path | None = None
    path_prefix: Path | None = None
    methods: tuple[HttpMethod, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()

    @model_validator(mode="after")
    def _one_path(self) -> HttpPermission:
        if self.path_exact is not None and self.path_prefix is not None:
            raise invalid("path_exact", "give path_exact or path_prefix, not both")
        return self


class Permission(StrictModel):
    action: Action
    http: HttpPermission


class IntentionSpec(StrictModel):
    """Whether ``source`` may call ``destination``: one ``action`` for every call, or L7
    ``permissions`` evaluated in order (the first that matches decides; a call none matches
    falls to the mesh's ``default_action``), as Consul's intentions."""

    #: A service, or ``*`` for every service of the mesh.
    source: Literal["*"] | ServiceName
    destination: ServiceName
    action: Action | None = None
    permissions: tuple[Permission, ...] = Field(default=(), max_length=64)

    @field_validator("destination")
    @classmethod
    def _not_the_source(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("source") == value:  # located at spec.destination, not at spec
            raise invalid("source", "an intention's source and destination must differ")
        return value

    @model_validator(mode="after")
    def _action_or_permissions(self) -> IntentionSpec:
        if (self.action is None) == (not self.permissions):
            raise invalid("action", "give either action (allow or deny) or permissions")
        return self
