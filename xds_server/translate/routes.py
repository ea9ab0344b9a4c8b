"""Routes attached to a listener -> the listener's ``RouteConfiguration`` (RDS).

One configuration per listener, named after it, with one virtual host per distinct
hostname (see ``hostnames``); the Envoy routes in each virtual host are ordered by
Gateway API precedence (see ``precedence``). A rule with several matches becomes several
Envoy routes, named ``<route>.rules[<i>].matches[<j>]`` like the field they come from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.config.route.v3 import route_pb2 as route_configuration_pb2
from google.protobuf.message import Message

from xds_server.model.config import Entry
from xds_server.model.rate_limit import RateLimitPolicySpec
from xds_server.model.retry import RetryPolicySpec
from xds_server.model.route import Match, RetryRef, RouteSpec, Rule
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.translate.actions import redirect_action, route_action
from xds_server.translate.auth import rule_auth_configs
from xds_server.translate.cors import CORS, cors_policy
from xds_server.translate.faults import FAULT, http_fault
from xds_server.translate.headers import apply_header_mutations
from xds_server.translate.hostnames import covering, specificity
from xds_server.translate.matches import route_match
from xds_server.translate.precedence import Position, sort_key
from xds_server.translate.rate_limits import LOCAL_RATE_LIMIT, local_rate_limit


@dataclass(frozen=True, slots=True, eq=False)
class EnvoyRoute:
    """One match of one rule, translated; placed into virtual hosts by precedence.

    Compared and hashed by identity: instances come from a cache, so an unchanged route
    yields the very same objects and the route configuration cache can key on them.
    """

    rule: int
    match_index: int
    match: Match
    message: Any


def envoy_routes(
    entry: Entry[RouteSpec],
    retry_policies: Mapping[str, RetryPolicySpec],
    service_policies: Mapping[str, ServicePolicySpec],
    rate_limit_policies: Mapping[str, RateLimitPolicySpec] | None = None,
) -> tuple[EnvoyRoute, ...]:
    """Every Envoy route of one ``Route`` document, in document order.

    Cached on the document and the policies it uses, so an unchanged route costs a few
    lookups: first by the identity of the entry and of each policy it names, then (a new
    entry of an unchanged document) by their equality.
    """
    limits_given = rate_limit_policies or {}
    hit = _BY_IDENTITY.get(id(entry))
    if hit is not None:
        known, refs, policies, result = hit
        if known is entry and all(
            (retry_policies, service_policies, limits_given)[source].get(name) is policy
            for (source, name), policy in zip(refs, policies, strict=True)
        ):
            return result
    refs = _references(entry.spec)
    sources = (retry_policies, service_policies, limits_given)
    found = tuple(sources[source].get(name) for source, name in refs)
    by_source: tuple[list[tuple[str, Any]], ...] = ([], [], [])
    for (source, name), policy in zip(refs, found, strict=True):
        by_source[source].append((name, policy))
    result = _envoy_routes(entry, *(tuple(items) for items in by_source))
    if len(_BY_IDENTITY) >= _IDENTITY_LIMIT:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[id(entry)] = (entry, refs, found, result)
    return result


#: Where a route's policies are looked up: retry, service and rate limit policies.
_RETRY, _SERVICE, _LIMIT = range(3)


@lru_cache(maxsize=8192)
def _references(spec: RouteSpec) -> tuple[tuple[int, str], ...]:
    """The policies a route uses, ``(source, name)``: retry policies, backend services and
    rate limit policies, each sorted (the order ``_envoy_routes`` is keyed in)."""
    retries = sorted({rule.retry.policy for rule in spec.rules if isinstance(rule.retry, RetryRef)})
    services = sorted(backend.service for rule in spec.rules for backend in rule.backends)
    limits = sorted(
        {
            rule.rate_limit.policy
            for rule in spec.rules
            if rule.rate_limit is not None and rule.rate_limit.policy is not None
        }
    )
    return (
        *((_RETRY, name) for name in retries),
        *((_SERVICE, name) for name in services),
        *((_LIMIT, name) for name in limits),
    )


#: An inventory change or a write leaves every other document's entry as it was (see
#: ``ConfigParser``): looking a route up by the identity of its entry and policies first
#: skips hashing the pydantic models (the larger part of translating after one change).
#: Each value holds the objects it was computed from, so their ids cannot be reused while
#: it lives.
_BY_IDENTITY: dict[
    int,
    tuple[Entry[RouteSpec], tuple[tuple[int, str], ...], tuple[Any, ...], tuple[EnvoyRoute, ...]],
] = {}
_IDENTITY_LIMIT = 8192


def clear_caches() -> None:
    """Forget every memoised route (tests prove the caches change nothing)."""
    _BY_IDENTITY.clear()
    _envoy_routes.cache_clear()
    _references.cache_clear()
    _virtual_hosts.clear()
    _route_configuration.cache_clear()


def _per_filter_configs(
    rule: Rule, rate_limit_policies: Mapping[str, RateLimitPolicySpec]
) -> dict[str, Any]:
    """A rule's ``typed_per_filter_config``: its CORS, faults, authentication and rate limit."""
    result: dict[str, Any] = {}
    if rule.filters.cors is not None:
        result[CORS] = cors_policy(rule.filters.cors)
    if rule.fault is not None:
        result[FAULT] = http_fault(rule.fault)
    if rule.auth is not None:
        result.update(rule_auth_configs(rule.auth))
    limit = rule.rate_limit
    if limit is not None:
        if limit.disabled:
            result[LOCAL_RATE_LIMIT] = local_rate_limit("rate_limit_disabled", None)
        elif limit.policy is not None and limit.policy in rate_limit_policies:
            result[LOCAL_RATE_LIMIT] = local_rate_limit(
                limit.policy, rate_limit_policies[limit.policy]
            )
    return result


@lru_cache(maxsize=8192)
def _envoy_routes(
    entry: Entry[RouteSpec],
    retries: tuple[tuple[str, RetryPolicySpec | None], ...],
    services: tuple[tuple[str, ServicePolicySpec | None], ...],
    limits: tuple[tuple[str, RateLimitPolicySpec | None], ...] = (),
) -> tuple[EnvoyRoute, ...]:
    retry_policies = {name: spec for name, spec in retries if spec is not None}
    service_policies = {name: spec for name, spec in services if spec is not None}
    rate_limit_policies = {name: spec for name, spec in limits if spec is not None}
    result = []
    for rule_index, rule in enumerate(entry.spec.rules):
        filters = rule.filters
        for match_index, match in enumerate(rule.matches):
            message = route_pb2.Route(
                name=f"{entry.name}.rules[{rule_index}].matches[{match_index}]",
                match=route_match(match),
            )
            if filters.redirect is not None:
                message.redirect.CopyFrom(redirect_action(filters.redirect, match))
            else:
                message.route.CopyFrom(route_action(rule, match, retry_policies, service_policies))
            apply_header_mutations(message, filters.request_headers, filters.response_headers)
            for filter_name, config in sorted(
                _per_filter_configs(rule, rate_limit_policies).items()
            ):
                message.typed_per_filter_config[filter_name].CopyFrom(config)
            result.append(EnvoyRoute(rule_index, match_index, match, message))
    return tuple(result)


#: What a route configuration depends on, per attached route: its name, age, hostnames
#: and translated Envoy routes.
Attached = tuple[str, int, tuple[str, ...], tuple[EnvoyRoute, ...]]
#: What one virtual host depends on: each hostname covering it that routes are attached
#: with (most specific first), and those routes.
VirtualHostInputs = tuple[tuple[str, tuple[Attached, ...]], ...]


def _virtual_host(host: str, inputs: VirtualHostInputs) -> Any:
    ranked: list[tuple[tuple[object, ...], Any]] = []
    seen: set[str] = set()
    # Most specific covering hostname first, so a route is ranked by its best one.
    for hostname, attached in inputs:
        host_rank = specificity(hostname)
        for name, created_revision, _, translated in attached:
            if name in seen:
                continue
            seen.add(name)
            for envoy_route in translated:
                position = Position(
                    host_rank, created_revision, name, envoy_route.rule, envoy_route.match_index
                )
                ranked.append((sort_key(position, envoy_route.match), envoy_route.message))
    ranked.sort(key=lambda item: item[0])
    return route_pb2.VirtualHost(
        name=host, domains=[host], routes=[message for _, message in ranked]
    )


def route_configuration(
    listener: str,
    routes: Sequence[Entry[RouteSpec]],
    translated: Mapping[str, tuple[EnvoyRoute, ...]],
) -> Message:
    """The ``RouteConfiguration`` of ``listener`` given the routes attached to it."""
    attached = tuple(
        sorted(
            (entry.name, entry.created_revision, entry.spec.hostnames, translated[entry.name])
            for entry in routes
        )
    )
    return _route_configuration(listener, attached)


@lru_cache(maxsize=1024)
def _route_configuration(listener: str, attached: tuple[Attached, ...]) -> Message:
    routes_by_hostname: dict[str, list[Attached]] = {}
    for route in attached:
        for hostname in route[2]:
            routes_by_hostname.setdefault(hostname, []).append(route)
    by_hostname = {hostname: tuple(routes) for hostname, routes in routes_by_hostname.items()}
    wildcards = any(hostname.startswith("*") for hostname in by_hostname)
    known = _virtual_hosts.get(listener, {})
    built: dict[str, tuple[VirtualHostInputs, bytes]] = {}
    for host in sorted(by_hostname):
        inputs: VirtualHostInputs
        if wildcards:
            inputs = tuple((h, by_hostname[h]) for h in covering(host) if h in by_hostname)
        else:  # only the host itself covers it
            inputs = ((host, by_hostname[host]),)
        hit = known.get(host)
        if hit is not None and hit[0] == inputs:
            # The same routes by name and age, whose translated Envoy routes are the very
            # same objects (``EnvoyRoute`` compares by identity): the same virtual host.
            built[host] = hit
        else:
            built[host] = (inputs, _field(_VIRTUAL_HOSTS, _virtual_host(host, inputs)))
    if listener not in _virtual_hosts and len(_virtual_hosts) >= _LISTENERS_KEPT:
        _virtual_hosts.clear()
    _virtual_hosts[listener] = built  # replaced whole: nothing is ever changed in place
    encoded = b"".join((_field(_NAME, listener.encode()), *(field for _, field in built.values())))
    result: Message = route_configuration_pb2.RouteConfiguration.FromString(encoded)
    return result


#: Per listener, per virtual host: the inputs it was last built from and the virtual host,
#: encoded as a ``RouteConfiguration.virtual_hosts`` field. A write that changes one route
#: rebuilds only the virtual hosts that route is in; the others are reused as they are.
#: The configuration is then parsed from the fields joined, which costs less than copying
#: thousands of messages into it, and is byte for byte what building it afresh gives (the
#: fields in field-number order, as protobuf serialises them). Bounded: a listener keeps
#: the hosts of its last build only, and at most ``_LISTENERS_KEPT`` listeners are kept.
#: A build reads the last one's table and publishes its own as a new dict, so concurrent
#: builds cannot break each other (the worst a race costs is rebuilding a virtual host).
_virtual_hosts: dict[str, dict[str, tuple[VirtualHostInputs, bytes]]] = {}
_LISTENERS_KEPT = 1024
#: ``RouteConfiguration`` field numbers: ``name`` and ``virtual_hosts``.
_NAME, _VIRTUAL_HOSTS = 1, 2


def _field(number: int, value: Message | bytes) -> bytes:
    """A length-delimited protobuf field: its key, its length (varints), its bytes."""
    payload = value if isinstance(value, bytes) else value.SerializeToString(deterministic=True)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@lru_cache(maxsize=256)
def https_redirect_configuration(listener: str, port: int | None) -> Message:
    """Every request, on any host, answered with a permanent redirect to ``https://``."""
    redirect = route_pb2.RedirectAction(
        https_redirect=True, response_code=route_pb2.RedirectAction.MOVED_PERMANENTLY
    )
    if port is not None:
        redirect.port_redirect = port
    result: Message = route_configuration_pb2.RouteConfiguration(
        name=listener,
        virtual_hosts=[
            route_pb2.VirtualHost(
                name="https-redirect",
                domains=["*"],
                routes=[
                    route_pb2.Route(
                        name="https-redirect",
                        match=route_pb2.RouteMatch(prefix="/"),
                        redirect=redirect,
                    )
                ],
            )
        ],
    )
    return result
