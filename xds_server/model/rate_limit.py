"""``RateLimitPolicy``: Envoy's local rate limit (a token bucket per Envoy) at the edge.

A policy is a bucket: ``requests`` tokens are added every ``per``, up to ``burst``; a request
takes one, and a request finding none is answered ``status`` (429) with
``response_headers``. It applies to every request on its ``listeners`` and to the route rules
naming it (``Rule.rate_limit: {policy: NAME}``; ``{disabled: true}`` exempts a rule). With
``by``, each value of a request header (or each client address) gets a bucket of its own.

Buckets are per Envoy (shared by its worker threads), not across a fleet: N Envoys let N
times the rate through. A rule naming a policy has its own bucket per listener and per match.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, field_validator, model_validator

from xds_server.model.base import StrictModel
from xds_server.model.duration import Duration
from xds_server.model.errors import invalid
from xds_server.model.http import HeaderName, HeaderValue, MutableHeaderName
from xds_server.model.names import Name

MAX_TOKENS: Final = 2**32 - 1
#: The 4xx and 5xx codes Envoy's ``StatusCode`` enum knows.
STATUS_CODES: Final = (
    *range(400, 418), 421, 422, 423, 424, 426, 428, 429, 431,
    *range(500, 509), 510, 511,
)  # fmt: skip


class RateLimitKey(StrictModel):
    """Exactly one: ``header`` (a bucket per value; requests without it share one) or
    ``client_address: true`` (a bucket per downstream address, as Envoy sees it: see the
    listener's ``http.use_remote_address`` / ``xff_num_trusted_hops``)."""

    header: HeaderName | None = None
    client_address: Literal[True] | None = None

    @model_validator(mode="after")
    def _one(self) -> RateLimitKey:
        if (self.header is None) == (self.client_address is None):
            raise invalid("one_of", "set exactly one of header and client_address")
        return self


class RateLimitPolicySpec(StrictModel):
    #: Every request on these listeners counts against the bucket (rules may opt out).
    listeners: tuple[Name, ...] = ()
    #: Tokens added every ``per``.
    requests: int = Field(ge=1, le=MAX_TOKENS)
    per: Duration = Duration(1000)
    #: The bucket's size: how many requests may come at once (default: ``requests``).
    burst: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    #: A bucket per value instead of one for all.
    by: RateLimitKey | None = None
    #: At most this many values get their own bucket (least recently used ones are
    #: forgotten); ``by`` only.
    max_tracked_values: int = Field(default=10_000, ge=1, le=1_000_000)
    #: The answer to a limited request.
    status: int = 429
    #: Added to limited answers.
    response_headers: dict[MutableHeaderName, HeaderValue] = Field(default_factory=dict)
    #: Send ``x-ratelimit-limit``, ``x-ratelimit-remaining`` and ``x-ratelimit-reset`` on
    #: every answer (IETF draft 03).
    rate_limit_headers: bool = False

    @field_validator("status")
    @classmethod
    def _status(cls, status: int) -> int:
        if status not in STATUS_CODES:
            raise invalid("status", f"status must be a 4xx or 5xx code Envoy knows, not {status}")
        return status

    @field_validator("per")
    @classmethod
    def _per(cls, per: Duration) -> Duration:
        if per.milliseconds < 50:
            raise invalid("per", "per must be at least 50ms (Envoy's smallest fill interval)")
        return per

    @model_validator(mode="after")
    def _checks(self) -> RateLimitPolicySpec:
        duplicates = sorted({n for n in self.listeners if self.listeners.count(n) > 1})
        if duplicates:
            raise invalid("unique", f"listeners are listed more than once: {', '.join(duplicates)}")
        names = [name.lower() for name in self.response_headers]
        if len(set(names)) != len(names):
            raise invalid("unique", "response_headers lists a header twice (names ignore case)")
        return self

    @property
    def max_tokens(self) -> int:
        return self.burst if self.burst is not None else self.requests

    def __hash__(self) -> int:
        return hash(
            (
                self.listeners, self.requests, self.per, self.burst, self.by,
                self.max_tracked_values, self.status, self.rate_limit_headers,
                tuple(self.response_headers.items()),
            )
        )  # fmt: skip


class RuleRateLimit(StrictModel):
    """A route rule's rate limit: ``{policy: NAME}`` (a bucket of that policy's size for this
    rule) or ``{disabled: true}`` (not limited, even where the listener's policy applies)."""

    policy: Name | None = None
    disabled: bool = False

    @model_validator(mode="after")
    def _one(self) -> RuleRateLimit:
        if (self.policy is not None) == self.disabled:
            raise invalid("one_of", "set exactly one of policy and disabled: true")
        return self
