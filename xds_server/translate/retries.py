"""A ``RetryPolicy`` spec (named or inline) -> Envoy's route ``RetryPolicy``."""

from __future__ import annotations

from typing import Any, Final

from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from xds_server.model.duration import Duration
from xds_server.model.retry import HOST_SELECTION_ATTEMPTS, ResetHeaderFormat, RetryPolicySpec
from xds_server.translate.protos import duration, pack, uint32

PREVIOUS_HOSTS: Final = "envoy.retry_host_predicates.previous_hosts"
_RESET_FORMAT: Final = {
    ResetHeaderFormat.SECONDS: route_pb2.RetryPolicy.SECONDS,
    ResetHeaderFormat.UNIX_TIMESTAMP: route_pb2.RetryPolicy.UNIX_TIMESTAMP,
}


def retry_policy(spec: RetryPolicySpec | None, per_try_timeout: Duration | None) -> Any:
    """``per_try_timeout`` (a rule's ``timeouts.per_try``) overrides the policy's.

    Without a policy but with a per-try timeout, the result retries nothing
    (``num_retries: 0``) and only bounds the single attempt.
    """
    if spec is None:
        if per_try_timeout is None:
            return None
        return route_pb2.RetryPolicy(
            num_retries=uint32(0), per_try_timeout=duration(per_try_timeout)
        )
    result = route_pb2.RetryPolicy(
        retry_on=",".join(condition.value for condition in spec.retry_on),
        num_retries=uint32(spec.num_retries),
        retriable_status_codes=spec.retriable_status_codes,
    )
    per_try = per_try_timeout if per_try_timeout is not None else spec.per_try_timeout
    if per_try is not None:
        result.per_try_timeout.CopyFrom(duration(per_try))
    if spec.backoff is not None:
        result.retry_back_off.CopyFrom(
            route_pb2.RetryPolicy.RetryBackOff(
                base_interval=duration(spec.backoff.base_interval),
                max_interval=duration(spec.backoff.effective_max_interval),
            )
        )
    if spec.retry_host_other:
        result.retry_host_predicate.append(
            route_pb2.RetryPolicy.RetryHostPredicate(
                name=PREVIOUS_HOSTS,
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        )
        result.host_selection_retry_max_attempts = HOST_SELECTION_ATTEMPTS
    limited = spec.rate_limited_backoff
    if limited is not None:
        result.rate_limited_retry_back_off.reset_headers.extend(
            route_pb2.RetryPolicy.ResetHeader(name=header.name, format=_RESET_FORMAT[header.format])
            for header in limited.reset_headers
        )
        if limited.max_interval is not None:
            result.rate_limited_retry_back_off.max_interval.CopyFrom(duration(limited.max_interval))
    return result
