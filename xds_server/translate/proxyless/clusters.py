"""Clusters and endpoint assignments as gRPC clients accept them.

- Clusters: EDS over ADS; ``ROUND_ROBIN`` or ``RING_HASH`` (gRFC A42: xxHash, ring sizes
  within gRPC's bounds). Every other policy (least request, maglev, random) becomes round
  robin: gRPC NACKs them (validation warns the operator). ``circuit_breakers.max_requests``
  is kept (gRFC A32); the rest of a ``ServicePolicy`` is Envoy's alone.
- Assignments: IP-literal endpoints only (the Envoy translation already leaves others out),
  no duplicate address, each locality weighted (its endpoints' weights summed: gRPC drops a
  locality without a weight), priorities renumbered 0, 1, 2... without gaps (gRPC rejects a
  gap). Endpoint metadata is dropped (gRPC does not read it).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import wrappers_pb2

from xds_server.model.identity import IdentityMemo
from xds_server.model.service_policy import LbPolicy, ServicePolicySpec
from xds_server.translate.protos import ads, uint32

#: gRPC's ring size bounds (gRFC A42: at most 8M entries; Envoy's defaults otherwise).
_MIN_RING: Final = 1024
_MAX_RING: Final = 8_388_608


@lru_cache(maxsize=8192)
def grpc_cluster(name: str, policy: ServicePolicySpec | None) -> Any:
    """Cluster ``name`` (its EDS service name too) as gRPC reads it."""
    result = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads(), service_name=name
        ),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    if policy is None:
        return result
    if policy.load_balancing.policy is LbPolicy.RING_HASH:
        result.lb_policy = cluster_pb2.Cluster.RING_HASH
        result.ring_hash_lb_config.CopyFrom(
            cluster_pb2.Cluster.RingHashLbConfig(
                minimum_ring_size=_uint64(_MIN_RING),
                maximum_ring_size=_uint64(_MAX_RING),
                hash_function=cluster_pb2.Cluster.RingHashLbConfig.XX_HASH,
            )
        )
    breakers = policy.circuit_breakers
    if breakers is not None and breakers.max_requests is not None:
        result.circuit_breakers.CopyFrom(
            circuit_breaker_pb2.CircuitBreakers(
                thresholds=[
                    circuit_breaker_pb2.CircuitBreakers.Thresholds(
                        max_requests=uint32(breakers.max_requests)
                    )
                ]
            )
        )
    return result


def _uint64(value: int) -> Any:
    return wrappers_pb2.UInt64Value(value=value)


def grpc_assignment(envoy_assignment: Any) -> Any:
    """``envoy_assignment`` (a ``ClusterLoadAssignment`` of ``translate.endpoints``) made
    acceptable to gRPC; memoised by identity (``translate.endpoints`` hands over an
    unchanged service's assignment as the very same message). Never mutates its argument."""
    return _by_identity(envoy_assignment)


def _grpc_assignment(source: Any) -> Any:
    seen: set[tuple[str, int]] = set()
    localities: list[Any] = []
    for locality in source.endpoints:
        kept = endpoint_components_pb2.LocalityLbEndpoints(
            locality=locality.locality, priority=locality.priority
        )
        weight = 0
        for lb_endpoint in locality.lb_endpoints:
            socket = lb_endpoint.endpoint.address.socket_address
            key = (str(socket.address), int(socket.port_value))
            if key in seen:
                continue
            seen.add(key)
            copy = kept.lb_endpoints.add()
            copy.endpoint.address.socket_address.address = key[0]
            copy.endpoint.address.socket_address.port_value = key[1]
            copy.health_status = lb_endpoint.health_status
            endpoint_weight = max(int(lb_endpoint.load_balancing_weight.value), 1)
            copy.load_balancing_weight.value = endpoint_weight
            weight += endpoint_weight
        if weight:  # a locality emptied by de-duplication is dropped
            kept.load_balancing_weight.value = weight
            localities.append(kept)
    dense = {p: n for n, p in enumerate(sorted({int(lle.priority) for lle in localities}))}
    for locality in localities:
        locality.priority = dense[int(locality.priority)]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=source.cluster_name, endpoints=localities
    )


def clear_caches() -> None:
    """Forget every memoised result (tests prove the caches change nothing)."""
    grpc_cluster.cache_clear()
    _by_identity.clear()


_by_identity: IdentityMemo[Any, Any] = IdentityMemo(_grpc_assignment)
