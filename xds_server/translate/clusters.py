"""A referenced service (and its ``ServicePolicy``) -> its EDS ``Cluster``.

Clusters are named after the service (a subset's after ``<service>~<subset>``, see
``subsets``) and get their endpoints over ADS. Results are cached
per ``(service, policy)``: policies are frozen, hashable models.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2, protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import http_pb2, range_pb2
from google.protobuf.message import Message

from xds_server.model.service_policy import (
    CircuitBreakers,
    HealthCheck,
    LbPolicy,
    LoadBalancing,
    OutlierDetection,
    ServicePolicySpec,
    UpstreamProtocol,
)
from xds_server.model.tls import UpstreamTls
from xds_server.translate.protos import ads, duration, pack, uint32
from xds_server.translate.tls import upstream_socket

_LB_POLICY: Final = {
    LbPolicy.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    LbPolicy.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    LbPolicy.RING_HASH: cluster_pb2.Cluster.RING_HASH,
    LbPolicy.MAGLEV: cluster_pb2.Cluster.MAGLEV,
    LbPolicy.RANDOM: cluster_pb2.Cluster.RANDOM,
}
HTTP_PROTOCOL_OPTIONS: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _circuit_breakers(limits: CircuitBreakers) -> Any:
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        priority=base_pb2.RoutingPriority.DEFAULT
    )
    for field in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        value = getattr(limits, field)
        if value is not None:
            getattr(thresholds, field).CopyFrom(uint32(value))
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds])


def _outlier_detection(settings: OutlierDetection) -> Any:
    result = outlier_detection_pb2.OutlierDetection()
    if settings.consecutive_5xx is not None:
        result.consecutive_5xx.CopyFrom(uint32(settings.consecutive_5xx))
    if settings.interval is not None:
        result.interval.CopyFrom(duration(settings.interval))
    if settings.base_ejection_time is not None:
        result.base_ejection_time.CopyFrom(duration(settings.base_ejection_time))
    if settings.max_ejection_percent is not None:
        result.max_ejection_percent.CopyFrom(uint32(settings.max_ejection_percent))
    return result


def _health_check(check: HealthCheck, protocol: UpstreamProtocol) -> Any:
    http = health_check_pb2.HealthCheck.HttpHealthCheck(
        path=check.path,
        expected_statuses=[
            # Envoy's ranges are half-open: [start, end).
            range_pb2.Int64Range(start=status.start, end=status.end + 1)
            for status in check.expected_statuses
        ],
        codec_client_type=(
            http_pb2.CodecClientType.HTTP1
            if protocol is UpstreamProtocol.HTTP1
            else http_pb2.CodecClientType.HTTP2
        ),
    )
    if check.host is not None:
        http.host = check.host
    return health_check_pb2.HealthCheck(
        timeout=duration(check.timeout),
        interval=duration(check.interval),
        unhealthy_threshold=uint32(check.unhealthy_threshold),
        healthy_threshold=uint32(check.healthy_threshold),
        http_health_check=http,
    )


def _http2_options() -> Any:
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    return pack(options)


def _slow_start(balancing: LoadBalancing) -> Any:
    config = cluster_pb2.Cluster.SlowStartConfig()
    if balancing.slow_start_window is not None:
        config.slow_start_window.CopyFrom(duration(balancing.slow_start_window))
    if balancing.aggression is not None:
        config.aggression.default_value = balancing.aggression
        config.aggression.runtime_key = "upstream.slow_start.aggression"
    return config


def _apply_slow_start(result: Any, balancing: LoadBalancing) -> None:
    """Slow start lives in the policy's own config (validation allows only these two)."""
    if balancing.slow_start_window is None:
        return
    if balancing.policy is LbPolicy.ROUND_ROBIN:
        result.round_robin_lb_config.slow_start_config.CopyFrom(_slow_start(balancing))
    elif balancing.policy is LbPolicy.LEAST_REQUEST:
        result.least_request_lb_config.slow_start_config.CopyFrom(_slow_start(balancing))


@lru_cache(maxsize=8192)
def cluster(
    service: str,
    policy: ServicePolicySpec | None,
    tls: UpstreamTls | None = None,
    name: str | None = None,
) -> Message:
    """The EDS cluster of ``service`` with ``policy`` applied (defaults when ``None``);
    ``tls`` is the upstream part of the policy's TLS policy. ``name`` (default: the
    service) names the cluster and its EDS service: a subset's is ``<service>~<subset>``.

    A copy of the policy's cluster with the names filled in (copying a message is one C
    call; building it field by field was the largest part of a cold translation)."""
    name = name or service
    result = cluster_pb2.Cluster()
    result.CopyFrom(_unnamed(policy, tls))
    result.name = name
    result.eds_cluster_config.service_name = name
    message: Message = result
    return message


@lru_cache(maxsize=1024)
def _unnamed(policy: ServicePolicySpec | None, tls: UpstreamTls | None) -> Any:
    """The cluster of ``policy`` and ``tls`` with no names (never handed out: copied)."""
    policy = policy or ServicePolicySpec()
    result = cluster_pb2.Cluster(
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads()),
        connect_timeout=duration(policy.connect_timeout),
        lb_policy=_LB_POLICY[policy.load_balancing.policy],
    )
    _apply_slow_start(result, policy.load_balancing)
    if policy.circuit_breakers is not None:
        result.circuit_breakers.CopyFrom(_circuit_breakers(policy.circuit_breakers))
    if policy.outlier_detection is not None:
        result.outlier_detection.CopyFrom(_outlier_detection(policy.outlier_detection))
    if policy.health_check is not None:
        result.health_checks.append(_health_check(policy.health_check, policy.protocol))
    if policy.protocol is not UpstreamProtocol.HTTP1:
        result.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(_http2_options())
    if tls is not None:
        result.transport_socket.CopyFrom(upstream_socket(tls, policy.protocol))
    return result


def clear_caches() -> None:
    """Forget every memoised cluster (tests prove the caches change nothing)."""
    cluster.cache_clear()
    _unnamed.cache_clear()
