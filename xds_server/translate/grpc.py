"""gRPC matches imply HTTP/2 to the upstream: gRPC does not run over HTTP/1.1.

A service that some rule with a ``grpc`` match sends to gets an HTTP/2 cluster even when its
``ServicePolicy`` (or the lack of one) says ``http1``.
"""

from __future__ import annotations

from collections.abc import Iterable

from xds_server.model.route import Rule
from xds_server.model.service_policy import ServicePolicySpec, UpstreamProtocol

_DEFAULT_GRPC = ServicePolicySpec(protocol=UpstreamProtocol.GRPC)


def grpc_services(rules: Iterable[Rule]) -> frozenset[str]:
    """Every service a rule with a ``grpc`` match sends to (mirrors included)."""
    return frozenset(
        service
        for rule in rules
        if any(match.grpc is not None for match in rule.matches)
        for service in rule.services
    )


def implied_policy(
    service: str, policy: ServicePolicySpec | None, grpc: frozenset[str]
) -> ServicePolicySpec | None:
    """``policy``, speaking gRPC (HTTP/2) if ``service`` is called by gRPC matches and the
    policy says ``http1``."""
    if service not in grpc:
        return policy
    if policy is not None and policy.protocol is not UpstreamProtocol.HTTP1:
        return policy
    if policy is None:
        return _DEFAULT_GRPC
    return policy.model_copy(update={"protocol": UpstreamProtocol.GRPC})
