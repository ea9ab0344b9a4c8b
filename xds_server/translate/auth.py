"""``AuthPolicy`` documents and ``Rule.auth`` -> Envoy's JWT and RBAC filters.

A listener that needs authentication gets ``envoy.filters.http.jwt_authn`` with every
provider of the policies it uses (named ``<policy>/<provider>``) and one requirement per
policy (named after the policy: a token of any of its providers). The listener's own policy
is the filter's default (a rule matching every path); a rule's ``auth`` overrides it with the
route's ``typed_per_filter_config``: ``requirement_name`` or ``disabled``. Verified payloads
go to dynamic metadata (``jwt_payload``), where ``envoy.filters.http.rbac``, configured per
route only, checks a rule's required claims (403 when they do not hold).

JWKS fetched from a URL come through a STATIC (IP) or STRICT_DNS (name) cluster named
``jwks/<policy>/<provider>``, with TLS for https (verified against ``jwks.ca``, for the
URL's host).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, http_uri_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2, value_pb2
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from xds_server.model.addresses import is_ip_literal
from xds_server.model.auth import AuthPolicySpec, ClaimRequirement, JwtProvider, RuleAuth
from xds_server.model.service_policy import UpstreamProtocol
from xds_server.model.tls import SanType, SubjectAltName, UpstreamTls
from xds_server.translate.protos import duration, host_cluster, pack
from xds_server.translate.tls import upstream_socket

JWT_AUTHN: Final = "envoy.filters.http.jwt_authn"
RBAC: Final = "envoy.filters.http.rbac"
#: Where verified payloads go in the request's dynamic metadata (under ``JWT_AUTHN``).
PAYLOAD_KEY: Final = "jwt_payload"
#: Where a verification failure goes (``{code, message}``), for the local reply mapper.
FAILURE_KEY: Final = "jwt_failure"


def provider_name(policy: str, provider: str) -> str:
    return f"{policy}/{provider}"


def jwks_cluster_name(policy: str, provider: str) -> str:
    return f"jwks/{policy}/{provider}"


def jwks_tls(provider: JwtProvider) -> UpstreamTls | None:
    """The TLS towards the provider's JWKS server (``None`` for http or inline keys)."""
    jwks = provider.jwks
    if not jwks.https:
        return None
    if is_ip_literal(jwks.host):
        names = (SubjectAltName(type=SanType.IP, exact=jwks.host),) if jwks.ca else ()
        return UpstreamTls(ca=jwks.ca, subject_alt_names=names)
    return UpstreamTls(sni=jwks.host, ca=jwks.ca)


@lru_cache(maxsize=1024)
def jwks_cluster(policy: str, provider: JwtProvider) -> Message:
    """The cluster Envoy fetches ``provider``'s keys through (its JWKS URL's host and port)."""
    jwks = provider.jwks
    name = jwks_cluster_name(policy, provider.name)
    result = host_cluster(name, jwks.host, jwks.port, duration(jwks.timeout))
    tls = jwks_tls(provider)
    if tls is not None:
        result.transport_socket.CopyFrom(upstream_socket(tls, UpstreamProtocol.HTTP1))
    message: Message = result
    return message


def _provider(policy: str, provider: JwtProvider) -> Any:
    result = jwt_pb2.JwtProvider(
        audiences=list(provider.audiences),
        forward=provider.forward,
        payload_in_metadata=PAYLOAD_KEY,
        failed_status_in_metadata=FAILURE_KEY,
        clock_skew_seconds=provider.clock_skew.milliseconds // 1000,
        from_headers=[
            jwt_pb2.JwtHeader(name=header.name, value_prefix=header.prefix)
            for header in provider.token_sources.headers
        ],
        from_cookies=list(provider.token_sources.cookies),
        from_params=list(provider.token_sources.query_params),
        claim_to_headers=[
            jwt_pb2.JwtClaimToHeader(header_name=item.header, claim_name=item.claim)
            for item in provider.claim_to_headers
        ],
    )
    if provider.issuer is not None:
        result.issuer = provider.issuer
    jwks = provider.jwks
    if jwks.url is not None:
        remote = jwt_pb2.RemoteJwks(
            http_uri=http_uri_pb2.HttpUri(
                uri=jwks.url,
                cluster=jwks_cluster_name(policy, provider.name),
                timeout=duration(jwks.timeout),
            ),
            # Fetched when the listener starts (and again on failure) rather than by the first
            # request, which would otherwise wait for it.
            async_fetch=jwt_pb2.JwksAsyncFetch(),
        )
        if jwks.cache_duration is not None:
            remote.cache_duration.CopyFrom(duration(jwks.cache_duration))
        result.remote_jwks.CopyFrom(remote)
    else:
        result.local_jwks.CopyFrom(base_pb2.DataSource(inline_string=jwks.inline or ""))
    return result


def _requirement(policy: str, spec: AuthPolicySpec) -> Any:
    names = [provider_name(policy, provider.name) for provider in spec.providers]
    if len(names) == 1:
        return jwt_pb2.JwtRequirement(provider_name=names[0])
    return jwt_pb2.JwtRequirement(
        requires_any=jwt_pb2.JwtRequirementOrList(
            requirements=[jwt_pb2.JwtRequirement(provider_name=name) for name in names]
        )
    )


@lru_cache(maxsize=1024)
def jwt_filter(policies: tuple[tuple[str, AuthPolicySpec], ...], default: str | None) -> Any:
    """The listener's ``jwt_authn`` filter: every provider of ``policies``; ``default``, the
    listener's own policy, required on every request a route does not say otherwise of."""
    config = jwt_pb2.JwtAuthentication()
    for policy, spec in policies:
        for provider in spec.providers:
            config.providers[provider_name(policy, provider.name)].CopyFrom(
                _provider(policy, provider)
            )
        config.requirement_map[policy].CopyFrom(_requirement(policy, spec))
    if default is not None:
        config.rules.append(
            jwt_pb2.RequirementRule(
                match=route_pb2.RouteMatch(prefix="/"), requirement_name=default
            )
        )
    return pack(config)


def token_failures_as_401() -> Any:
    """The connection manager's ``local_reply_config``: every JWT verification failure is
    answered 401 (RFC 6750's ``invalid_token``). Envoy answers a token for another audience
    403, which says "you may not" where the truth is "this token is not valid here"."""
    failed = accesslog_pb2.AccessLogFilter(
        metadata_filter=accesslog_pb2.MetadataFilter(
            matcher=metadata_pb2.MetadataMatcher(
                filter=JWT_AUTHN,
                path=[metadata_pb2.MetadataMatcher.PathSegment(key=FAILURE_KEY)],
                value=value_pb2.ValueMatcher(present_match=True),
            ),
            match_if_key_not_found=wrappers_pb2.BoolValue(value=False),
        )
    )
    return hcm_pb2.LocalReplyConfig(
        mappers=[
            hcm_pb2.ResponseMapper(
                filter=failed,
                status_code=wrappers_pb2.UInt32Value(value=401),
                headers_to_add=[
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(
                            key="www-authenticate", value='Bearer error="invalid_token"'
                        ),
                        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                    )
                ],
            )
        ]
    )


def rbac_filter() -> Any:
    """The listener's RBAC filter: no rules of its own (it allows everything); routes with
    required claims configure it per route."""
    return pack(rbac_filter_pb2.RBAC())


def _claim_matcher(claim: str, value: Any) -> Any:
    return rbac_pb2.Principal(
        sourced_metadata=rbac_pb2.SourcedMetadata(
            metadata_matcher=metadata_pb2.MetadataMatcher(
                filter=JWT_AUTHN,
                path=[
                    metadata_pb2.MetadataMatcher.PathSegment(key=PAYLOAD_KEY),
                    metadata_pb2.MetadataMatcher.PathSegment(key=claim),
                ],
                value=value,
            ),
            metadata_source=rbac_pb2.MetadataSource.DYNAMIC,
        )
    )


def _claim(requirement: ClaimRequirement) -> Any:
    if requirement.exact is not None:
        return _claim_matcher(
            requirement.claim,
            value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=requirement.exact)),
        )
    item = requirement.contains or ""
    in_list = value_pb2.ValueMatcher(
        list_match=value_pb2.ListMatcher(
            one_of=value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=item))
        )
    )
    # An OAuth2 scope is one string of space-separated words (RFC 6749 section 3.3).
    in_words = value_pb2.ValueMatcher(
        string_match=string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex=f"^(.* )?{re.escape(item)}( .*)?$")
        )
    )
    return rbac_pb2.Principal(
        or_ids=rbac_pb2.Principal.Set(
            ids=[
                _claim_matcher(requirement.claim, in_list),
                _claim_matcher(requirement.claim, in_words),
            ]
        )
    )


@lru_cache(maxsize=4096)
def rule_auth_configs(auth: RuleAuth) -> Mapping[str, Any]:
    """The ``typed_per_filter_config`` entries of a rule's routes."""
    result: dict[str, Any] = {}
    if auth.disabled:
        result[JWT_AUTHN] = pack(jwt_pb2.PerRouteConfig(disabled=True))
    elif auth.policy is not None:
        result[JWT_AUTHN] = pack(jwt_pb2.PerRouteConfig(requirement_name=auth.policy))
    if auth.claims:
        principals = [_claim(claim) for claim in auth.claims]
        policy = rbac_pb2.Policy(
            permissions=[rbac_pb2.Permission(any=True)],
            principals=[
                principals[0]
                if len(principals) == 1
                else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=principals))
            ],
        )
        rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)
        rules.policies["claims"].CopyFrom(policy)
        result[RBAC] = pack(rbac_filter_pb2.RBACPerRoute(rbac=rbac_filter_pb2.RBAC(rules=rules)))
    return result
