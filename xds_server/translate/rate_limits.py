"""``RateLimitPolicy`` documents and ``Rule.rate_limit`` -> Envoy's local rate limit filter.

A listener whose policy names it, or to which a route with a rule-level rate limit is
attached, gets ``envoy.filters.http.local_ratelimit``: with the listener's policy it limits
every request; without, it does nothing by itself. A rule naming a policy gets the policy's
bucket in the route's ``typed_per_filter_config`` (replacing the listener's for that rule);
``disabled`` gets a config that is not enabled. ``by`` is a wildcard descriptor fed by the
config's own ``rate_limits`` action, so each value has its own bucket.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.type.v3 import http_status_pb2, percent_pb2, token_bucket_pb2
from google.protobuf import wrappers_pb2

from xds_server.model.rate_limit import RateLimitPolicySpec
from xds_server.translate.headers import literal
from xds_server.translate.protos import duration, pack, uint32

LOCAL_RATE_LIMIT: Final = "envoy.filters.http.local_ratelimit"
_HEADER_KEY: Final = "header"
_ADDRESS_KEY: Final = "remote_address"


def _bucket(spec: RateLimitPolicySpec) -> Any:
    return token_bucket_pb2.TokenBucket(
        max_tokens=spec.max_tokens,
        tokens_per_fill=uint32(spec.requests),
        fill_interval=duration(spec.per),
    )


def _always(runtime_key: str) -> Any:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
        ),
        runtime_key=runtime_key,
    )


@lru_cache(maxsize=1024)
def local_rate_limit(stat_prefix: str, spec: RateLimitPolicySpec | None) -> Any:
    """The filter's config: ``spec``'s bucket, or (``None``) a config that is not enabled
    (``filter_enabled`` unset is 0%; Envoy wants a bucket in per-route configs all the same)."""
    config = local_rate_limit_pb2.LocalRateLimit(stat_prefix=stat_prefix)
    if spec is None:
        config.token_bucket.CopyFrom(_bucket(RateLimitPolicySpec(requests=1)))
        return pack(config)
    config.token_bucket.CopyFrom(_bucket(spec))
    config.filter_enabled.CopyFrom(_always("local_rate_limit_enabled"))
    config.filter_enforced.CopyFrom(_always("local_rate_limit_enforced"))
    config.status.CopyFrom(http_status_pb2.HttpStatus(code=spec.status))  # type: ignore[arg-type]
    config.response_headers_to_add.extend(
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=literal(value)),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        for name, value in sorted(spec.response_headers.items())
    )
    if spec.rate_limit_headers:
        config.enable_x_ratelimit_headers = ratelimit_pb2.DRAFT_VERSION_03
    key = spec.by
    if key is not None:
        action = route_pb2.RateLimit.Action()
        if key.header is not None:
            descriptor_key = _HEADER_KEY
            action.request_headers.CopyFrom(
                route_pb2.RateLimit.Action.RequestHeaders(
                    header_name=key.header, descriptor_key=descriptor_key
                )
            )
        else:
            descriptor_key = _ADDRESS_KEY
            action.remote_address.CopyFrom(route_pb2.RateLimit.Action.RemoteAddress())
        config.rate_limits.append(route_pb2.RateLimit(actions=[action]))
        # A key without a value: a wildcard, a bucket per distinct value.
        config.descriptors.append(
            ratelimit_pb2.LocalRateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=descriptor_key)],
                token_bucket=_bucket(spec),
            )
        )
        config.max_dynamic_descriptors.CopyFrom(uint32(spec.max_tracked_values))
        # Requests with a value use its bucket only; requests without share the default one.
        config.always_consume_default_token_bucket.CopyFrom(wrappers_pb2.BoolValue(value=False))
    return pack(config)
