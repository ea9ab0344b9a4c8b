"""A target's RouteConfiguration for gRPC clients (gRFC A28, A31, A44, A42).

One per registry service ``S``, shared by its listeners ``S`` and ``S:PORT``: one virtual
host whose domains are ``S`` and ``S:*`` (gRPC matches the target's authority, port
included). The rules of every ``Route`` whose ``hostnames`` name the target (``S`` or
``S:PORT``) come first, in the routes' name order, then a catch-all to ``S`` itself.

Only what gRPC honours is translated (validation warns about the rest):
- matches: path (exact, prefix, regex; ``grpc``), headers; a match with query parameters
  is left out (gRPC would ignore the condition and so match too much), as is a ``method``
  other than POST (a gRPC call is always a POST);
- actions: ``cluster`` / ``weighted_clusters`` (subsets are their own clusters); a
  redirect rule is left out (gRPC fails such calls);
- retries: gRPC status codes only, at most 5 attempts (``num_retries`` 4);
- timeouts: ``timeouts.request`` as ``max_stream_duration``, ``grpc_max`` as
  ``grpc_timeout_header_max``;
- hashing: header hash policies of ring-hash services.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.config.route.v3 import route_pb2 as route_config_pb2

from xds_server.model.retry import RetryPolicySpec
from xds_server.model.route import Backend, Match, RetryRef, Rule
from xds_server.model.service_policy import HASHING_POLICIES, ServicePolicySpec
from xds_server.model.validation_grpc import GRPC_RETRY_ON, MAX_GRPC_RETRIES
from xds_server.translate.matches import _header, regex
from xds_server.translate.protos import duration, uint32
from xds_server.translate.subsets import cluster_name


def route_match(match: Match) -> Any | None:
    """``match`` as gRPC reads it; ``None`` when gRPC cannot honour it."""
    if match.query_params:
        return None
    if match.method is not None and match.method.value != "POST":
        return None
    result = route_pb2.RouteMatch()
    path = match.route_path
    if path is None:
        result.prefix = ""
    elif path.exact is not None:
        result.path = path.exact
    elif path.prefix is not None:
        # Whole segments, as the Envoy translation's ``path_separated_prefix`` (which gRPC
        # does not know): every gRPC path is ``/Service/Method``.
        prefix = path.prefix.rstrip("/")
        result.prefix = prefix + "/" if prefix else ""
    elif path.regex is not None:
        result.safe_regex.CopyFrom(regex(path.regex))
    result.headers.extend(_header(header) for header in match.headers)
    return result


def _retry(rule: Rule, retry_policies: Mapping[str, RetryPolicySpec]) -> Any | None:
    retry = rule.retry
    spec = retry_policies.get(retry.policy) if isinstance(retry, RetryRef) else retry
    if spec is None:
        return None
    codes = [condition.value for condition in spec.retry_on if condition in GRPC_RETRY_ON]
    if not codes or spec.num_retries == 0:
        return None
    result = route_pb2.RetryPolicy(
        retry_on=",".join(codes), num_retries=uint32(min(spec.num_retries, MAX_GRPC_RETRIES))
    )
    if spec.backoff is not None:
        result.retry_back_off.base_interval.CopyFrom(duration(spec.backoff.base_interval))
        result.retry_back_off.max_interval.CopyFrom(duration(spec.backoff.effective_max_interval))
    return result


def _hash_policies(rule: Rule, policies: Mapping[str, ServicePolicySpec]) -> Iterator[Any]:
    seen: set[str] = set()
    for backend in rule.backends:
        policy = policies.get(backend.service)
        if policy is None or policy.load_balancing.policy not in HASHING_POLICIES:
            continue
        for hash_policy in policy.load_balancing.hash_policies:
            if hash_policy.header is not None and hash_policy.header not in seen:
                seen.add(hash_policy.header)
                yield route_pb2.RouteAction.HashPolicy(
                    header=route_pb2.RouteAction.HashPolicy.Header(header_name=hash_policy.header),
                    terminal=policy.load_balancing.terminal,
                )


def route_action(
    rule: Rule,
    retry_policies: Mapping[str, RetryPolicySpec],
    policies: Mapping[str, ServicePolicySpec],
) -> Any:
    result = route_pb2.RouteAction()
    backends = [backend for backend in rule.backends if backend.weight > 0]
    if len(backends) == 1:
        result.cluster = cluster_name(backends[0], policies)
    else:
        result.weighted_clusters.clusters.extend(
            route_pb2.WeightedCluster.ClusterWeight(
                name=cluster_name(backend, policies), weight=uint32(backend.weight)
            )
            for backend in backends
        )
    timeouts = rule.timeouts
    if timeouts is not None and timeouts.request is not None and timeouts.request.milliseconds:
        result.max_stream_duration.max_stream_duration.CopyFrom(duration(timeouts.request))
    if timeouts is not None and timeouts.grpc_max is not None:
        result.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(timeouts.grpc_max))
    retry = _retry(rule, retry_policies)
    if retry is not None:
        result.retry_policy.CopyFrom(retry)
    result.hash_policy.extend(_hash_policies(rule, policies))
    return result


def grpc_routes(
    rules: Iterable[Rule],
    retry_policies: Mapping[str, RetryPolicySpec],
    policies: Mapping[str, ServicePolicySpec],
) -> list[Any]:
    """The routes of ``rules`` gRPC can honour, in order."""
    routes: list[Any] = []
    for rule in rules:
        if rule.filters.redirect is not None or not rule.backends:
            continue
        action = route_action(rule, retry_policies, policies)
        for match in rule.matches:
            matched = route_match(match)
            if matched is not None:
                routes.append(route_pb2.Route(match=matched, route=action))
    return routes


def route_configuration(
    service: str, routes: Iterable[Any], policies: Mapping[str, ServicePolicySpec]
) -> Any:
    """The route configuration named ``service``: ``routes``, then everything else to
    ``service``'s cluster (its policy's default subset's, if any; hashing as it says)."""
    to_service = Rule(backends=(Backend(service=service),))
    catch_all = route_pb2.Route(
        match=route_pb2.RouteMatch(prefix=""),
        route=route_pb2.RouteAction(
            cluster=cluster_name(to_service.backends[0], policies),
            hash_policy=list(_hash_policies(to_service, policies)),
        ),
    )
    return route_config_pb2.RouteConfiguration(
        name=service,
        virtual_hosts=[
            route_pb2.VirtualHost(
                name=service, domains=[service, f"{service}:*"], routes=[*routes, catch_all]
            )
        ],
    )


@lru_cache(maxsize=8192)
def plain_route_configuration(service: str, policy: ServicePolicySpec | None) -> Any:
    """``route_configuration`` of a target no route names (memoised: most targets)."""
    return route_configuration(service, (), {} if policy is None else {service: policy})


def clear_caches() -> None:
    """Forget every memoised result (tests prove the caches change nothing)."""
    plain_route_configuration.cache_clear()
