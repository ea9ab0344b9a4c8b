"""``Route``: which requests on which listeners go to which services (HTTPRoute-like).

A route names the listeners it attaches to and the hostnames it answers for; each rule has
matches (any one suffices), backends (weighted registry services), filters, timeouts and a
retry policy. Rules of every route on a listener are ordered by Gateway API precedence when
translated (see ``xds_server.translate.precedence``).
"""

from __future__ import annotations

from collections import Counter
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from xds_server.model.auth import RuleAuth
from xds_server.model.base import NonEmpty, StrictModel
from xds_server.model.cors import Cors
from xds_server.model.duration import Duration
from xds_server.model.errors import invalid
from xds_server.model.fault import Fault
from xds_server.model.grpc import GrpcMatch
from xds_server.model.http import (
    HeaderName,
    HeaderValue,
    HeaderValuePrefix,
    HttpMethod,
    MutableHeaderName,
    Path,
)
from xds_server.model.names import Hostname, HostnameMatch, Name, ServiceName
from xds_server.model.rate_limit import RuleRateLimit
from xds_server.model.regex import Re2Regex
from xds_server.model.retry import RetryPolicySpec
from xds_server.model.upgrade import Upgrades

MAX_WEIGHT: Final = 1_000_000
#: Enough for any real split; keeps the sum of weights far below Envoy's uint32 limit.
MAX_BACKENDS: Final = 64


def _exactly_one(model: StrictModel, fields: tuple[str, ...]) -> None:
    chosen = [name for name in fields if getattr(model, name) is not None]
    if len(chosen) != 1:
        raise invalid("one_of", f"set exactly one of {', '.join(fields)}")


def _unique(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    if len(set(values)) == len(values):
        return values  # the common case, in linear time
    duplicates = sorted(value for value, count in Counter(values).items() if count > 1)
    if duplicates:
        raise invalid("unique", f"{what} listed more than once: {', '.join(duplicates)}")
    return values


class PathMatch(StrictModel):
    """Exactly one of ``exact``, ``prefix`` or ``regex`` (RE2, matched against the whole path).

    A prefix matches whole path segments, as in Gateway API: ``/api`` matches ``/api`` and
    ``/api/x`` but not ``/apix``; a trailing ``/`` is ignored.
    """

    exact: Path | None = None
    prefix: Path | None = None
    regex: Re2Regex | None = None

    @model_validator(mode="after")
    def _one(self) -> PathMatch:
        _exactly_one(self, ("exact", "prefix", "regex"))
        return self


class HeaderMatch(StrictModel):
    """Exactly one of ``exact``, ``prefix``, ``regex`` or ``present: true``; ``invert`` negates."""

    name: HeaderName
    exact: HeaderValue | None = None
    prefix: HeaderValuePrefix | None = None
    regex: Re2Regex | None = None
    present: Literal[True] | None = None
    invert: bool = False

    @model_validator(mode="after")
    def _one(self) -> HeaderMatch:
        _exactly_one(self, ("exact", "prefix", "regex", "present"))
        return self


class QueryParamMatch(StrictModel):
    """Exactly one of ``exact``, ``regex`` or ``present: true``."""

    name: Annotated[str, Field(min_length=1, max_length=1024)]
    exact: Annotated[str, Field(max_length=1024)] | None = None
    regex: Re2Regex | None = None
    present: Literal[True] | None = None

    @model_validator(mode="after")
    def _one(self) -> QueryParamMatch:
        _exactly_one(self, ("exact", "regex", "present"))
        return self


class Match(StrictModel):
    """All conditions must hold. No ``path`` (nor ``grpc``) means every path (prefix ``/``).

    ``grpc`` is a path match written the gRPC way (see ``GrpcMatch``), so it excludes ``path``.
    """

    path: PathMatch | None = None
    grpc: GrpcMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()
    method: HttpMethod | None = None

    @model_validator(mode="after")
    def _path_or_grpc(self) -> Match:
        if self.path is not None and self.grpc is not None:
            raise invalid("one_of", "set at most one of path and grpc (grpc is a path match)")
        return self

    @property
    def route_path(self) -> PathMatch | None:
        """The path matched: ``path``, or what ``grpc`` means (an exact path for a method, a
        segment prefix for a whole service)."""
        if self.grpc is None:
            return self.path
        if self.grpc.method is None:
            return PathMatch(prefix=self.grpc.path)
        return PathMatch(exact=self.grpc.path)

    @property
    def is_prefix(self) -> bool:
        path = self.route_path
        return path is None or path.prefix is not None

    @property
    def path_prefix(self) -> str | None:
        """The prefix matched (``/`` when no path is given), or ``None`` if not a prefix."""
        path = self.route_path
        if path is None:
            return "/"
        return path.prefix


class Backend(StrictModel):
    service: ServiceName
    #: One of the subsets the service's ``ServicePolicy`` defines (its own cluster); none:
    #: the policy's ``default_subset`` if it has one, else every instance.
    subset: Name | None = None
    #: Relative share of the rule's requests; 0 keeps the service referenced but idle.
    weight: int = Field(default=1, ge=0, le=MAX_WEIGHT)

    @property
    def target(self) -> str:
        """``service`` or ``service~subset``: what must be unique among a rule's backends."""
        return self.service if self.subset is None else f"{self.service}~{self.subset}"


class HeaderMutation(StrictModel):
    """``set`` replaces, ``add`` appends, ``remove`` deletes (names are case-insensitive)."""

    set: dict[MutableHeaderName, HeaderValue] = Field(default_factory=dict)
    add: dict[MutableHeaderName, HeaderValue] = Field(default_factory=dict)
    remove: tuple[MutableHeaderName, ...] = ()

    @model_validator(mode="after")
    def _no_conflicts(self) -> HeaderMutation:
        seen: dict[str, str] = {}
        for where, names in (("set", self.set), ("add", self.add), ("remove", self.remove)):
            for name in names:
                key = name.lower()
                if key in seen:
                    raise invalid(
                        "header_conflict",
                        f"header {name!r} appears in both {seen[key]} and {where}"
                        if seen[key] != where
                        else f"header {name!r} appears twice in {where}",
                    )
                seen[key] = where
        return self

    def __hash__(self) -> int:
        return hash((tuple(self.set.items()), tuple(self.add.items()), self.remove))


class RedirectStatus(IntEnum):
    MOVED_PERMANENTLY = 301
    FOUND = 302
    SEE_OTHER = 303
    TEMPORARY_REDIRECT = 307
    PERMANENT_REDIRECT = 308


class Scheme(StrEnum):
    HTTP = "http"
    HTTPS = "https"


class Redirect(StrictModel):
    """Answer with a redirect instead of forwarding. Unset parts keep the request's."""

    scheme: Scheme | None = None
    hostname: Hostname | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    #: Replace the whole path.
    path: Path | None = None
    #: Replace the matched prefix (only for prefix matches).
    prefix: Path | None = None
    status_code: RedirectStatus = RedirectStatus.FOUND

    @model_validator(mode="after")
    def _path_or_prefix(self) -> Redirect:
        if self.path is not None and self.prefix is not None:
            raise invalid("one_of", "set at most one of path and prefix")
        return self


class Rewrite(StrictModel):
    """Rewrite the request before forwarding: the matched prefix or the full path, the host."""

    prefix: Path | None = None
    full_path: Path | None = None
    hostname: Hostname | None = None

    @model_validator(mode="after")
    def _something(self) -> Rewrite:
        if self.prefix is not None and self.full_path is not None:
            raise invalid("one_of", "set at most one of prefix and full_path")
        if self.prefix is None and self.full_path is None and self.hostname is None:
            raise invalid("one_of", "set prefix, full_path or hostname")
        return self


class Mirror(StrictModel):
    """Send a copy of a share of the requests to another service (responses are ignored)."""

    service: ServiceName
    percent: float = Field(default=100.0, ge=0.0, le=100.0)


class Filters(StrictModel):
    request_headers: HeaderMutation | None = None
    response_headers: HeaderMutation | None = None
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    mirror: Mirror | None = None
    #: Answer CORS preflights and tag responses for the allowed origins.
    cors: Cors | None = None

    @model_validator(mode="after")
    def _redirect_alone(self) -> Filters:
        if self.redirect is not None and (self.rewrite is not None or self.mirror is not None):
            raise invalid("redirect", "a redirect cannot be combined with rewrite or mirror")
        return self


class Timeouts(StrictModel):
    """``request``: the whole exchange, retries included (Envoy's default is 15s; ``0s``
    disables it). ``per_try``: one attempt. ``idle``: no bytes in either direction.
    ``grpc_max``: end a call when a gRPC client's ``grpc-timeout`` header says so, up to this
    long (``0s``: no maximum); unset, Envoy ignores the header. ``request`` applies either way."""

    request: Duration | None = None
    per_try: Duration | None = None
    idle: Duration | None = None
    grpc_max: Duration | None = None

    @model_validator(mode="after")
    def _per_try_within_request(self) -> Timeouts:
        if (
            self.request is not None
            and self.per_try is not None
            and self.request.milliseconds > 0
            and self.per_try > self.request
        ):
            raise invalid(
                "timeouts",
                f"per_try ({self.per_try}) must not be longer than request ({self.request})",
            )
        return self


class RetryRef(StrictModel):
    """A retry policy by name."""

    policy: Name

    @model_validator(mode="before")
    @classmethod
    def _not_both(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > 1 and "policy" in data:
            others = ", ".join(sorted(key for key in data if key != "policy"))
            raise invalid(
                "retry",
                f"use either {{policy: NAME}} or inline retry fields, not both (got policy "
                f"and {others})",
            )
        return data


def _retry(value: Any, handler: ValidatorFunctionWrapHandler) -> RetryRef | RetryPolicySpec:
    """Pick the shape by the presence of ``policy``, so errors name the fields themselves
    (a plain union would report each field once per alternative)."""
    if isinstance(value, RetryRef | RetryPolicySpec):
        return value
    if isinstance(value, dict) and "policy" in value:
        return RetryRef.model_validate(value)
    return RetryPolicySpec.model_validate(value)


#: ``{policy: NAME}`` or the fields of a ``RetryPolicy`` spec.
Retry = Annotated[RetryRef | RetryPolicySpec, WrapValidator(_retry)]


class Rule(StrictModel):
    #: Any one match selects the rule. Empty means every request (prefix ``/``).
    matches: tuple[Match, ...] = (Match(),)
    backends: tuple[Backend, ...] = Field(default=(), max_length=MAX_BACKENDS)
    filters: Filters = Filters()
    timeouts: Timeouts | None = None
    retry: Retry | None = None
    #: JWT authentication of this rule's requests (see ``AuthPolicy``).
    auth: RuleAuth | None = None
    #: This rule's rate limit (see ``RateLimitPolicy``).
    rate_limit: RuleRateLimit | None = None
    #: Upgrades (WebSocket) this rule's requests may make, even if the listener allows none.
    upgrades: Upgrades = ()
    #: Delays and aborts injected into a share of this rule's requests.
    fault: Fault | None = None

    @field_validator("matches")
    @classmethod
    def _default_match(cls, matches: tuple[Match, ...]) -> tuple[Match, ...]:
        return matches or (Match(),)

    @field_validator("backends")
    @classmethod
    def _unique_backends(cls, backends: tuple[Backend, ...]) -> tuple[Backend, ...]:
        _unique(tuple(backend.target for backend in backends), "services (and subsets) are")
        return backends

    @model_validator(mode="after")
    def _action(self) -> Rule:
        if self.filters.redirect is not None:
            if (
                self.backends
                or self.timeouts is not None
                or self.retry is not None
                or self.upgrades
            ):
                raise invalid(
                    "redirect",
                    "a rule with a redirect forwards nothing: remove backends, timeouts, retry "
                    "and upgrades",
                )
            if self.filters.redirect.prefix is not None:
                self._require_prefix_matches("filters.redirect.prefix")
            return self
        if not self.backends:
            raise invalid("backends", "a rule needs at least one backend (or a redirect)")
        if sum(backend.weight for backend in self.backends) == 0:
            raise invalid("backends", "the backends' weights must not all be 0")
        rewrite = self.filters.rewrite
        if rewrite is not None and rewrite.prefix is not None:
            self._require_prefix_matches("filters.rewrite.prefix")
        return self

    def _require_prefix_matches(self, field: str) -> None:
        if not all(match.is_prefix for match in self.matches):
            raise invalid(
                "prefix", f"{field} replaces a matched prefix: every match must be a path prefix"
            )

    @property
    def services(self) -> tuple[str, ...]:
        """Every service this rule sends to: backends, then the mirror target."""
        names = [backend.service for backend in self.backends]
        if self.filters.mirror is not None:
            names.append(self.filters.mirror.service)
        return tuple(names)


class RouteSpec(StrictModel):
    """A route attaches to edge ``listeners``, to mesh ``upstreams`` (every sidecar's calls
    to those services, as Gateway API's GAMMA routes whose parent is a Service), or both.
    ``hostnames`` apply to the listeners only: a mesh call is matched on the rules alone."""

    #: Before ``listeners``, whose validator reads it.
    upstreams: tuple[ServiceName, ...] = ()
    listeners: Annotated[tuple[Name, ...], Field(validate_default=True)] = ()
    hostnames: NonEmpty[HostnameMatch] = ("*",)
    rules: NonEmpty[Rule]

    @field_validator("listeners")
    @classmethod
    def _unique_listeners(cls, listeners: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not listeners and not info.data.get("upstreams"):
            raise invalid("too_short", "must list at least one item (or name upstreams)")
        return _unique(listeners, "listeners are")

    @field_validator("upstreams")
    @classmethod
    def _unique_upstreams(cls, upstreams: tuple[str, ...]) -> tuple[str, ...]:
        return _unique(upstreams, "upstreams are")

    @field_validator("hostnames")
    @classmethod
    def _unique_hostnames(cls, hostnames: tuple[str, ...]) -> tuple[str, ...]:
        return _unique(hostnames, "hostnames are")
