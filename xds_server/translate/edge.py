"""The HTTP filters a listener gets from edge policies, in order: JWT authentication, RBAC
(required claims), local rate limit; then the router.

Authentication comes first, so unauthenticated requests are answered 401 before they reach
the rate limit; a rate limit keyed ``by`` a header may then key on a claim forwarded as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from xds_server.model.auth import AuthPolicySpec
from xds_server.model.rate_limit import RateLimitPolicySpec
from xds_server.translate.auth import JWT_AUTHN, RBAC, jwt_filter, rbac_filter
from xds_server.translate.rate_limits import LOCAL_RATE_LIMIT, local_rate_limit


@dataclass(frozen=True, slots=True)
class EdgeFilters:
    """What a listener needs from ``AuthPolicy`` and ``RateLimitPolicy`` documents."""

    #: Every auth policy the listener's requests may need (its own and its rules'), by name.
    auth_policies: tuple[tuple[str, AuthPolicySpec], ...] = ()
    #: The listener's own auth policy: required unless a rule says otherwise.
    auth_default: str | None = None
    #: Some rule requires claims (the RBAC filter must be there for its per-route config).
    rbac: bool = False
    #: Some rule has a rate limit (the filter must be there for its per-route config).
    rate_limit: bool = False
    #: The listener's own rate limit policy.
    rate_limit_policy: RateLimitPolicySpec | None = None

    def http_filters(self, listener: str) -> list[Any]:
        filters = []
        if self.auth_policies:
            filters.append(
                hcm_pb2.HttpFilter(
                    name=JWT_AUTHN, typed_config=jwt_filter(self.auth_policies, self.auth_default)
                )
            )
        if self.rbac:
            filters.append(hcm_pb2.HttpFilter(name=RBAC, typed_config=rbac_filter()))
        if self.rate_limit or self.rate_limit_policy is not None:
            filters.append(
                hcm_pb2.HttpFilter(
                    name=LOCAL_RATE_LIMIT,
                    typed_config=local_rate_limit(listener, self.rate_limit_policy),
                )
            )
        return filters


NO_EDGE_FILTERS = EdgeFilters()
