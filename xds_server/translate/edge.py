"""The HTTP filters a listener gets from its rules and edge policies, in order: CORS, fault
injection, JWT authentication, RBAC (required claims), local rate limit; then the router.

CORS comes first, so preflights (which carry no credentials) are answered before
authentication; authentication comes before the rate limit, so unauthenticated requests are
answered 401 before they reach it; a rate limit keyed ``by`` a header may then key on a claim
forwarded as one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from xds_server.model.auth import AuthPolicySpec
from xds_server.model.rate_limit import RateLimitPolicySpec
from xds_server.model.route import Rule
from xds_server.model.upgrade import UpgradeType
from xds_server.translate.auth import JWT_AUTHN, RBAC, jwt_filter, rbac_filter
from xds_server.translate.cors import CORS, cors_filter
from xds_server.translate.faults import FAULT, fault_filter
from xds_server.translate.rate_limits import LOCAL_RATE_LIMIT, local_rate_limit


@dataclass(frozen=True, slots=True)
class RuleFeatures:
    """What the rules on a listener need of its connection manager."""

    #: Some rule has ``filters.cors``.
    cors: bool = False
    #: Some rule has a ``fault``.
    fault: bool = False
    #: The upgrades some rule allows.
    upgrades: frozenset[UpgradeType] = frozenset()


def rule_features(rules: Iterable[Rule]) -> RuleFeatures:
    cors = fault = False
    upgrades: set[UpgradeType] = set()
    for rule in rules:
        cors = cors or rule.filters.cors is not None
        fault = fault or rule.fault is not None
        upgrades.update(rule.upgrades)
    return RuleFeatures(cors, fault, frozenset(upgrades))


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
    #: What the listener's rules need (CORS, faults, upgrades).
    features: RuleFeatures = RuleFeatures()

    def http_filters(self, listener: str) -> list[Any]:
        filters = []
        if self.features.cors:
            filters.append(hcm_pb2.HttpFilter(name=CORS, typed_config=cors_filter()))
        if self.features.fault:
            filters.append(hcm_pb2.HttpFilter(name=FAULT, typed_config=fault_filter()))
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
