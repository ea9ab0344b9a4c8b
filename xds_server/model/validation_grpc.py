"""Warnings for what proxyless gRPC clients (``xds:///SERVICE``) cannot honour.

Every registry service is a gRPC target, and a ``Route`` whose ``hostnames`` name one applies
its rules to gRPC clients too (``translate.proxyless``). What gRPC's xDS client would NACK
or ignore is left out of its resources, so a write is never refused for it, and never makes a
gRPC client NACK; the operator is told instead, naming the feature and the client type:

- on a route of a target: a redirect (gRPC fails such calls: the rule is left out), query
  parameter matches and a method other than POST (the match is left out), JWT
  authentication and rate limits (filters gRPC NACKs: not applied), header changes,
  rewrites, mirrors, faults and CORS (not applied), retry conditions that are not gRPC
  status codes or more than 4 retries (gRPC retries status codes, at most 5 attempts),
  ``per_try`` and ``idle`` timeouts (not applied);
- on a target's ``ServicePolicy``: a load-balancing policy other than ``round_robin`` and
  ``ring_hash`` (gRPC NACKs it: round robin is sent), hash policies on cookies or the
  source IP (gRPC hashes on headers only), outlier detection (gRPC ejects on success rate
  and failure percentage only, not consecutive errors), upstream TLS (not sent).

Only targets the registry knows are checked (nothing before its first sync).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from xds_server.model.config import Config
from xds_server.model.document import Kind
from xds_server.model.inventory import Inventory
from xds_server.model.problems import Problem
from xds_server.model.retry import RetryOn, RetryPolicySpec
from xds_server.model.route import RetryRef, Rule
from xds_server.model.service_policy import LbPolicy

_CLIENT: Final = "proxyless gRPC clients"
#: The conditions gRPC retries on (gRFC A44), and its retry cap (5 attempts).
GRPC_RETRY_ON: Final = frozenset(
    {
        RetryOn.CANCELLED,
        RetryOn.DEADLINE_EXCEEDED,
        RetryOn.INTERNAL,
        RetryOn.RESOURCE_EXHAUSTED,
        RetryOn.UNAVAILABLE,
    }
)
MAX_GRPC_RETRIES: Final = 4
_GRPC_POLICIES: Final = frozenset({LbPolicy.ROUND_ROBIN, LbPolicy.RING_HASH})


def grpc_warnings(config: Config, inventory: Inventory) -> Iterator[Problem]:
    yield from grpc_route_warnings(config, inventory)
    yield from grpc_policy_warnings(config, inventory)


def grpc_route_warnings(config: Config, inventory: Inventory) -> Iterator[Problem]:
    """The warnings on routes: each about one route, reading no other route (validation
    memoises them per route)."""
    if not inventory.synced:
        return
    targets = inventory.services
    retry_policies = {name: entry.spec for name, entry in config.retry_policies.items()}
    for name, entry in config.routes.items():
        named = sorted({h for h in entry.spec.hostnames if h in targets})
        if not named:
            continue
        target = f"{_CLIENT} of xds:///{named[0]}"
        for index, rule in enumerate(entry.spec.rules):
            for where, reason in _rule_problems(rule, retry_policies):
                yield Problem(
                    Kind.ROUTE.value, name, f"spec.rules[{index}].{where}", f"{reason} {target}"
                )


def grpc_policy_warnings(config: Config, inventory: Inventory) -> Iterator[Problem]:
    """The warnings on the service policies of gRPC targets."""
    if not inventory.synced:
        return
    targets = inventory.services
    for name, policy_entry in config.service_policies.items():
        if name not in targets:
            continue
        balancing = policy_entry.spec.load_balancing
        if balancing.policy not in _GRPC_POLICIES:
            yield Problem(
                Kind.SERVICE_POLICY.value,
                name,
                "spec.load_balancing.policy",
                f"{balancing.policy.value} is not supported by {_CLIENT} (xds:///{name}): "
                "they are sent round_robin",
            )
        spec = policy_entry.spec
        if spec.outlier_detection is not None:
            yield Problem(
                Kind.SERVICE_POLICY.value,
                name,
                "spec.outlier_detection",
                f"consecutive-error ejection is not applied to {_CLIENT} (xds:///{name})",
            )
        if spec.tls_policy is not None:
            yield Problem(
                Kind.SERVICE_POLICY.value,
                name,
                "spec.tls_policy",
                f"{_CLIENT} (xds:///{name}) are not sent upstream TLS: they call in plaintext",
            )
        for index, hashing in enumerate(balancing.hash_policies):
            if hashing.header is None:
                yield Problem(
                    Kind.SERVICE_POLICY.value,
                    name,
                    f"spec.load_balancing.hash_policies[{index}]",
                    f"{_CLIENT} (xds:///{name}) hash on headers only: not applied to them",
                )


def _rule_problems(
    rule: Rule, retry_policies: dict[str, RetryPolicySpec]
) -> Iterator[tuple[str, str]]:
    filters = rule.filters
    if filters.redirect is not None:
        yield "filters.redirect", "a redirect fails gRPC calls: the rule is left out for"
        return
    for index, match in enumerate(rule.matches):
        if match.query_params:
            yield (
                f"matches[{index}].query_params",
                "query parameter matches are not supported: the match is left out for",
            )
        if match.method is not None and match.method.value != "POST":
            yield f"matches[{index}].method", "gRPC calls are POSTs: the match is left out for"
    if rule.auth is not None and (rule.auth.policy is not None or rule.auth.claims):
        yield "auth", "JWT authentication is not applied to"
    if rule.rate_limit is not None and rule.rate_limit.policy is not None:
        yield "rate_limit", "rate limits are not applied to"
    for feature in ("request_headers", "response_headers", "rewrite", "mirror", "cors"):
        if getattr(filters, feature, None) is not None:
            yield f"filters.{feature}", f"{feature} is not applied to"
    if rule.fault is not None:
        yield "fault", "fault injection is not applied to"
    timeouts = rule.timeouts
    if timeouts is not None and (timeouts.per_try is not None or timeouts.idle is not None):
        yield "timeouts", "per_try and idle timeouts are not applied to"
    retry = rule.retry
    spec = retry_policies.get(retry.policy) if isinstance(retry, RetryRef) else retry
    if spec is not None:
        other = [c.value for c in spec.retry_on if c not in GRPC_RETRY_ON]
        if other:
            yield (
                "retry",
                f"only gRPC status codes are retried ({', '.join(other)} ignored) by",
            )
        if spec.num_retries > MAX_GRPC_RETRIES:
            yield "retry.num_retries", f"at most {MAX_GRPC_RETRIES} retries (5 attempts) by"
