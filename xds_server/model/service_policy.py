"""``ServicePolicy``: how Envoy talks to one registry service (its cluster settings).

The document's name is the service it applies to. ``subsets`` name groups of its instances,
as Consul's ``service-resolver`` does (``Subsets``, ``DefaultSubset``, ``OnlyPassing``); a
route backend may name one, and each subset becomes its own cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from xds_server.model.base import StrictModel
from xds_server.model.duration import Duration, PositiveDuration
from xds_server.model.errors import invalid
from xds_server.model.http import TOKEN_PATTERN, HeaderName, Path
from xds_server.model.names import Hostname, Name

MAX_UINT32: Final = 2**32 - 1
Count = Annotated[int, Field(ge=0, le=MAX_UINT32)]


class LbPolicy(StrEnum):
    ROUND_ROBIN = "round_robin"
    LEAST_REQUEST = "least_request"
    RING_HASH = "ring_hash"
    MAGLEV = "maglev"
    RANDOM = "random"


#: Policies that use a request hash, and so the route's hash policies.
HASHING_POLICIES: Final = frozenset({LbPolicy.RING_HASH, LbPolicy.MAGLEV})


class CookieHash(StrictModel):
    """Hash on a cookie; with ``ttl`` Envoy sets the cookie when the request lacks it."""

    #: A cookie name is an HTTP token.
    name: Annotated[str, Field(min_length=1, max_length=256, pattern=TOKEN_PATTERN)]
    ttl: Duration | None = None
    path: Path | None = None


class HashPolicy(StrictModel):
    """One input of the request hash: exactly one of ``header``, ``cookie``, ``source_ip``."""

    header: HeaderName | None = None
    cookie: CookieHash | None = None
    source_ip: Literal[True] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> HashPolicy:
        chosen = [name for name in ("header", "cookie", "source_ip") if getattr(self, name)]
        if len(chosen) != 1:
            raise invalid(
                "one_of", "set exactly one of header, cookie or source_ip (source_ip: true)"
            )
        return self


#: Policies with Envoy's slow start (``slow_start_config``): round robin and least request.
SLOW_START_POLICIES: Final = frozenset({LbPolicy.ROUND_ROBIN, LbPolicy.LEAST_REQUEST})


class LoadBalancing(StrictModel):
    policy: LbPolicy = LbPolicy.ROUND_ROBIN
    #: Only for ``ring_hash`` and ``maglev``. Envoy evaluates hash policies on the route, so
    #: translation copies them onto every route that sends to this service.
    hash_policies: tuple[HashPolicy, ...] = ()
    #: Stop at the first hash policy that produces a hash (Envoy's ``terminal`` on each).
    terminal: bool = False
    #: A new (or newly healthy) instance's share of traffic grows over this window instead
    #: of arriving at once. Only ``round_robin`` and ``least_request``.
    slow_start_window: PositiveDuration | None = None
    #: How fast the share grows within the window (Envoy's default 1.0: linearly; larger
    #: values hold new instances back longer). Needs ``slow_start_window``.
    aggression: float | None = Field(default=None, gt=0.0, le=100.0)

    @model_validator(mode="after")
    def _hash_needs_hashing_policy(self) -> LoadBalancing:
        if self.hash_policies and self.policy not in HASHING_POLICIES:
            raise invalid(
                "hash_policies",
                f"hash_policies only apply with policy ring_hash or maglev, not {self.policy}",
            )
        return self

    @field_validator("slow_start_window")
    @classmethod
    def _slow_start(cls, window: Duration | None, info: ValidationInfo) -> Duration | None:
        policy = info.data.get("policy")
        if window is not None and policy is not None and policy not in SLOW_START_POLICIES:
            raise invalid(
                "slow_start_window",
                "slow_start_window only applies with policy round_robin or least_request, "
                f"not {policy}",
            )
        return window

    @field_validator("aggression")
    @classmethod
    def _aggression(cls, aggression: float | None, info: ValidationInfo) -> float | None:
        if aggression is not None and info.data.get("slow_start_window") is None:
            raise invalid("aggression", "aggression needs slow_start_window")
        return aggression


class CircuitBreakers(StrictModel):
    """Limits per Envoy (not per host) on what this service may be sent at once."""

    max_connections: Count | None = None
    max_pending_requests: Count | None = None
    max_requests: Count | None = None
    max_retries: Count | None = None


class OutlierDetection(StrictModel):
    """Eject hosts that fail: passive health checking."""

    consecutive_5xx: Count | None = None
    interval: PositiveDuration | None = None
    base_ejection_time: PositiveDuration | None = None
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)


_STATUS_RANGE = re.compile(r"^(\d{3})-(\d{3})$")


@dataclass(frozen=True, order=True, slots=True)
class StatusRange:
    """HTTP status codes ``start`` to ``end`` inclusive; written ``200`` or ``"200-299"``."""

    start: int
    end: int

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _status_range,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.start if value.start == value.end else str(value)
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "oneOf": [
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "string", "pattern": r"^\d{3}-\d{3}$"},
            ],
            "examples": [200, "200-399"],
        }


def _status_range(value: Any) -> StatusRange:
    if isinstance(value, StatusRange):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        start = end = value
    elif isinstance(value, str) and (match := _STATUS_RANGE.fullmatch(value)):
        start, end = int(match.group(1)), int(match.group(2))
    else:
        raise invalid(
            "status_range", "expected a status code (200) or an inclusive range ('200-399')"
        )
    if not 100 <= start <= end <= 599:
        raise invalid(
            "status_range",
            f"{value!r} is not a range of HTTP status codes (100-599, start <= end)",
        )
    return StatusRange(start, end)


class HealthCheck(StrictModel):
    """Active HTTP health checking of every instance."""

    path: Path
    interval: PositiveDuration = Duration(10_000)
    timeout: PositiveDuration = Duration(1_000)
    unhealthy_threshold: int = Field(default=3, ge=1, le=MAX_UINT32)
    healthy_threshold: int = Field(default=2, ge=1, le=MAX_UINT32)
    #: Codes or ranges that count as healthy; Envoy's default is 200 only.
    expected_statuses: tuple[StatusRange, ...] = ()
    #: The Host header of health check requests (default: the cluster name).
    host: Hostname | None = None


class UpstreamProtocol(StrEnum):
    HTTP1 = "http1"
    HTTP2 = "http2"
    #: HTTP/2, the transport of gRPC.
    GRPC = "grpc"


#: Enough subsets for any real canary or version split.
MAX_SUBSETS: Final = 32
_Label = Annotated[str, Field(min_length=1, max_length=512)]
_Labels = Annotated[dict[_Label, _Label], Field(max_length=32)]


class Subset(StrictModel):
    """Instances of the service that carry every tag in ``tags`` and every key/value pair
    of ``metadata`` (Consul ``Service.Meta``; the static registry's ``metadata``) and of
    ``node_metadata`` (Consul ``Node.Meta``). With ``only_passing``, instances whose checks
    warn (degraded) are left out as well as failing ones."""

    name: Name
    tags: Annotated[tuple[_Label, ...], Field(max_length=32)] = ()
    metadata: _Labels = Field(default_factory=dict)
    node_metadata: _Labels = Field(default_factory=dict)
    only_passing: bool = False

    @model_validator(mode="after")
    def _filters_something(self) -> Subset:
        if not (self.tags or self.metadata or self.node_metadata):
            raise invalid(
                "subset_filter",
                f"subset {self.name!r} names no instances: set tags, metadata or node_metadata",
            )
        return self

    def __hash__(self) -> int:
        return hash(
            (
                self.name,
                self.tags,
                tuple(sorted(self.metadata.items())),
                tuple(sorted(self.node_metadata.items())),
                self.only_passing,
            )
        )


class ServicePolicySpec(StrictModel):
    load_balancing: LoadBalancing = LoadBalancing()
    connect_timeout: PositiveDuration = Duration(5_000)
    circuit_breakers: CircuitBreakers | None = None
    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    #: A ``TlsPolicy`` whose ``upstream`` part says how Envoy speaks TLS to the service.
    tls_policy: Name | None = None
    #: Named groups of the service's instances (route backends name them).
    subsets: Annotated[tuple[Subset, ...], Field(max_length=MAX_SUBSETS)] = ()
    #: Where a backend that names no subset goes, and where a subset without a healthy
    #: instance falls back to; without it, such a backend goes to every instance and an
    #: empty subset answers 503.
    default_subset: Name | None = None

    @field_validator("subsets")
    @classmethod
    def _unique_subsets(cls, subsets: tuple[Subset, ...]) -> tuple[Subset, ...]:
        names = [subset.name for subset in subsets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise invalid("unique", f"subset names listed more than once: {', '.join(duplicates)}")
        return subsets

    @field_validator("default_subset")
    @classmethod
    def _default_is_a_subset(cls, default: str | None, info: ValidationInfo) -> str | None:
        subsets: tuple[Subset, ...] | None = info.data.get("subsets")
        if default is not None and subsets is not None:
            names = [subset.name for subset in subsets]
            if default not in names:
                raise invalid(
                    "default_subset",
                    f"default_subset {default!r} is not one of the subsets (defined: "
                    f"{', '.join(names) or 'none'})",
                )
        return default

    def subset(self, name: str) -> Subset | None:
        return next((subset for subset in self.subsets if subset.name == name), None)
