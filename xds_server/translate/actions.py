"""A rule's backends, filters, timeouts and retry -> Envoy's ``RouteAction`` or redirect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.type.v3 import percent_pb2

from xds_server.model.retry import RetryPolicySpec
from xds_server.model.route import Match, Mirror, Redirect, RedirectStatus, RetryRef, Rule
from xds_server.model.service_policy import HashPolicy, ServicePolicySpec
from xds_server.translate.protos import duration, uint32
from xds_server.translate.retries import retry_policy
from xds_server.translate.rewrites import apply_full_path_rewrite, apply_prefix_rewrite
from xds_server.translate.subsets import cluster_name
from xds_server.translate.upgrades import route_upgrades

_REDIRECT_CODE: Final = {
    RedirectStatus.MOVED_PERMANENTLY: route_pb2.RedirectAction.MOVED_PERMANENTLY,
    RedirectStatus.FOUND: route_pb2.RedirectAction.FOUND,
    RedirectStatus.SEE_OTHER: route_pb2.RedirectAction.SEE_OTHER,
    RedirectStatus.TEMPORARY_REDIRECT: route_pb2.RedirectAction.TEMPORARY_REDIRECT,
    RedirectStatus.PERMANENT_REDIRECT: route_pb2.RedirectAction.PERMANENT_REDIRECT,
}
#: Mirror percentages are sent as parts per million (four decimals of a percent).
_PER_MILLION: Final = 10_000


def redirect_action(redirect: Redirect, match: Match) -> Any:
    result = route_pb2.RedirectAction(response_code=_REDIRECT_CODE[redirect.status_code])
    if redirect.scheme is not None:
        result.scheme_redirect = redirect.scheme.value
    if redirect.hostname is not None:
        result.host_redirect = redirect.hostname
    if redirect.port is not None:
        result.port_redirect = redirect.port
    if redirect.path is not None:
        result.path_redirect = redirect.path
    elif redirect.prefix is not None and match.path_prefix is not None:
        apply_prefix_rewrite(result, match.path_prefix, redirect.prefix)
    return result


def _mirror(mirror: Mirror) -> Any:
    return route_pb2.RouteAction.RequestMirrorPolicy(
        cluster=mirror.service,
        runtime_fraction=base_pb2.RuntimeFractionalPercent(
            default_value=percent_pb2.FractionalPercent(
                numerator=round(mirror.percent * _PER_MILLION),
                denominator=percent_pb2.FractionalPercent.MILLION,
            )
        ),
    )


def _hash_policy(policy: HashPolicy, terminal: bool) -> Any:
    result = route_pb2.RouteAction.HashPolicy(terminal=terminal)
    if policy.header is not None:
        result.header.header_name = policy.header
    elif policy.cookie is not None:
        result.cookie.name = policy.cookie.name
        if policy.cookie.ttl is not None:
            result.cookie.ttl.CopyFrom(duration(policy.cookie.ttl))
        if policy.cookie.path is not None:
            result.cookie.path = policy.cookie.path
    else:
        result.connection_properties.source_ip = True
    return result


def hash_policies(rule: Rule, service_policies: Mapping[str, ServicePolicySpec]) -> list[Any]:
    """The hash policies of the rule's backend services, in backend order, without repeats.

    Envoy hashes on the route, not the cluster, so a service's policy lands on every route
    that sends to it.
    """
    seen: set[tuple[HashPolicy, bool]] = set()
    result = []
    for backend in rule.backends:
        policy = service_policies.get(backend.service)
        if policy is None:
            continue
        terminal = policy.load_balancing.terminal
        for hash_policy in policy.load_balancing.hash_policies:
            if (hash_policy, terminal) not in seen:
                seen.add((hash_policy, terminal))
                result.append(_hash_policy(hash_policy, terminal))
    return result


def route_action(
    rule: Rule,
    match: Match,
    retry_policies: Mapping[str, RetryPolicySpec],
    service_policies: Mapping[str, ServicePolicySpec],
) -> Any:
    result = route_pb2.RouteAction()
    if len(rule.backends) == 1:
        result.cluster = cluster_name(rule.backends[0], service_policies)
    else:
        result.weighted_clusters.clusters.extend(
            route_pb2.WeightedCluster.ClusterWeight(
                name=cluster_name(backend, service_policies), weight=uint32(backend.weight)
            )
            for backend in rule.backends
        )
    timeouts = rule.timeouts
    if timeouts is not None and timeouts.request is not None:
        result.timeout.CopyFrom(duration(timeouts.request))
    if timeouts is not None and timeouts.idle is not None:
        result.idle_timeout.CopyFrom(duration(timeouts.idle))
    if timeouts is not None and timeouts.grpc_max is not None:
        result.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(timeouts.grpc_max))
    retry = rule.retry
    spec = retry_policies.get(retry.policy) if isinstance(retry, RetryRef) else retry
    retries = retry_policy(spec, timeouts.per_try if timeouts is not None else None)
    if retries is not None:
        result.retry_policy.CopyFrom(retries)
    rewrite = rule.filters.rewrite
    if rewrite is not None:
        if rewrite.prefix is not None and match.path_prefix is not None:
            apply_prefix_rewrite(result, match.path_prefix, rewrite.prefix)
        elif rewrite.full_path is not None:
            apply_full_path_rewrite(result, rewrite.full_path)
        if rewrite.hostname is not None:
            result.host_rewrite_literal = rewrite.hostname
    if rule.filters.mirror is not None:
        result.request_mirror_policies.append(_mirror(rule.filters.mirror))
    result.hash_policy.extend(hash_policies(rule, service_policies))
    result.upgrade_configs.extend(route_upgrades(rule.upgrades))
    return result
