"""``RetryPolicy``: when and how Envoy retries a request (Envoy's router ``retry_policy``).

A route uses one either by name (``retry: {policy: default}``) or inline (the same fields).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import Field, ValidationInfo, field_validator, model_validator

from xds_server.model.base import NonEmpty, StrictModel
from xds_server.model.duration import Duration, PositiveDuration
from xds_server.model.errors import invalid
from xds_server.model.http import MutableHeaderName

MAX_RETRIES: Final = 10
#: ``host_selection_retry_max_attempts`` when ``retry_host_other`` is set: how often Envoy
#: may re-pick a host to avoid the ones already tried.
HOST_SELECTION_ATTEMPTS: Final = 3


class RetryOn(StrEnum):
    """The conditions of Envoy's ``x-envoy-retry-on`` and ``x-envoy-retry-grpc-on``."""

    FIVE_XX = "5xx"
    GATEWAY_ERROR = "gateway-error"
    RESET = "reset"
    RESET_BEFORE_REQUEST = "reset-before-request"
    CONNECT_FAILURE = "connect-failure"
    ENVOY_RATELIMITED = "envoy-ratelimited"
    RETRIABLE_4XX = "retriable-4xx"
    REFUSED_STREAM = "refused-stream"
    RETRIABLE_STATUS_CODES = "retriable-status-codes"
    RETRIABLE_HEADERS = "retriable-headers"
    HTTP3_POST_CONNECT_FAILURE = "http3-post-connect-failure"
    # gRPC status codes
    CANCELLED = "cancelled"
    DEADLINE_EXCEEDED = "deadline-exceeded"
    INTERNAL = "internal"
    RESOURCE_EXHAUSTED = "resource-exhausted"
    UNAVAILABLE = "unavailable"


#: Failures after which the upstream did not answer: what Envoy Gateway retries by default.
DEFAULT_RETRY_ON: Final = (
    RetryOn.CONNECT_FAILURE,
    RetryOn.REFUSED_STREAM,
    RetryOn.UNAVAILABLE,
    RetryOn.CANCELLED,
)


class Backoff(StrictModel):
    base_interval: PositiveDuration
    #: Defaults to ten times ``base_interval`` (Envoy's default).
    max_interval: PositiveDuration | None = None

    @field_validator("max_interval")
    @classmethod
    def _max_not_below_base(cls, value: Duration | None, info: ValidationInfo) -> Duration | None:
        base = info.data.get("base_interval")
        if value is not None and base is not None and value < base:
            raise invalid(
                "backoff",
                f"max_interval ({value}) must not be shorter than base_interval ({base})",
            )
        return value

    @property
    def effective_max_interval(self) -> Duration:
        return self.max_interval if self.max_interval is not None else self.base_interval * 10


class ResetHeaderFormat(StrEnum):
    SECONDS = "seconds"
    UNIX_TIMESTAMP = "unix_timestamp"


class ResetHeader(StrictModel):
    """A response header telling how long to wait before retrying (e.g. ``Retry-After``)."""

    name: MutableHeaderName
    format: ResetHeaderFormat = ResetHeaderFormat.SECONDS


class RateLimitedBackoff(StrictModel):
    """Back off as the upstream says when it rate-limits (Envoy ``rate_limited_retry_back_off``)."""

    reset_headers: NonEmpty[ResetHeader]
    max_interval: PositiveDuration | None = None


class RetryPolicySpec(StrictModel):
    """Retry settings; also the shape of an inline ``retry`` on a route rule.

    Setting ``retriable_status_codes`` adds ``retriable-status-codes`` to ``retry_on``: the
    codes would otherwise be ignored by Envoy.
    """

    retry_on: tuple[RetryOn, ...] = DEFAULT_RETRY_ON
    num_retries: int = Field(default=1, ge=0, le=MAX_RETRIES)
    per_try_timeout: Duration | None = None
    backoff: Backoff | None = None
    retriable_status_codes: tuple[int, ...] = ()
    #: Retry on a different host than the ones already tried.
    retry_host_other: bool = False
    rate_limited_backoff: RateLimitedBackoff | None = None

    @field_validator("retriable_status_codes")
    @classmethod
    def _status_codes(cls, codes: tuple[int, ...]) -> tuple[int, ...]:
        for code in codes:
            if not 100 <= code <= 599:
                raise invalid("status_code", f"{code} is not an HTTP status code (100-599)")
        return tuple(sorted(set(codes)))

    @field_validator("retry_on")
    @classmethod
    def _unique_conditions(cls, conditions: tuple[RetryOn, ...]) -> tuple[RetryOn, ...]:
        if not conditions:
            raise invalid("retry_on", "must name at least one condition (omit it for the default)")
        return tuple(dict.fromkeys(conditions))

    @model_validator(mode="after")
    def _codes_imply_condition(self) -> RetryPolicySpec:
        if self.retriable_status_codes and RetryOn.RETRIABLE_STATUS_CODES not in self.retry_on:
            # Frozen model: set the normalised value the way pydantic itself would.
            object.__setattr__(self, "retry_on", (*self.retry_on, RetryOn.RETRIABLE_STATUS_CODES))
        return self
