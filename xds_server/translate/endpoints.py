"""A registry service's instances -> its ``ClusterLoadAssignment`` (EDS).

Instances are grouped into ``LocalityLbEndpoints`` per (priority, region, zone), sorted, so
equal services give equal bytes. Per-service results are cached: an unchanged service costs
a dictionary lookup on the next translation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Final

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from xds_server.model.addresses import is_ip_literal
from xds_server.model.identity import IdentityMemo
from xds_server.model.inventory import Endpoint, Health, Service
from xds_server.translate.protos import uint32

_HEALTH: Final = {
    Health.HEALTHY: health_check_pb2.HealthStatus.HEALTHY,
    Health.DEGRADED: health_check_pb2.HealthStatus.DEGRADED,
    Health.UNHEALTHY: health_check_pb2.HealthStatus.UNHEALTHY,
}
#: Envoy's limits: weights are 1.., priorities 0..128.
_MAX_WEIGHT: Final = 65_535
MAX_PRIORITY: Final = 128
#: Where metadata values that are not already under a namespace go: the namespace Envoy's
#: subset load balancer reads (``{version: v2}`` from a static registry file lands here).
DEFAULT_METADATA_NAMESPACE: Final = "envoy.lb"


def usable(endpoint: Endpoint) -> bool:
    """EDS endpoints must be IP literals with a real port; Envoy rejects the whole
    assignment otherwise, so such instances are left out (validation warns about them)."""
    return 1 <= endpoint.port <= 65_535 and is_ip_literal(endpoint.address)


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct | None:
    struct = struct_pb2.Struct()
    try:
        struct.update(dict(values))
    except (TypeError, ValueError):
        return None
    return struct


def _metadata(metadata: Mapping[str, Any]) -> Any:
    namespaces: dict[str, Mapping[str, Any]] = {}
    loose = {key: value for key, value in metadata.items() if not isinstance(value, Mapping)}
    for key, value in metadata.items():
        if isinstance(value, Mapping):
            namespaces[key] = value
    if loose:
        namespaces[DEFAULT_METADATA_NAMESPACE] = {
            **namespaces.get(DEFAULT_METADATA_NAMESPACE, {}),
            **loose,
        }
    result = base_pb2.Metadata()
    for namespace, values in sorted(namespaces.items()):
        struct = _struct(values)
        if struct is not None:
            result.filter_metadata[namespace].CopyFrom(struct)
    return result


def _lb_endpoint(endpoint: Endpoint) -> Any:
    lb_endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(
                    address=endpoint.address, port_value=endpoint.port
                )
            )
        ),
        health_status=_HEALTH[endpoint.health],
        load_balancing_weight=uint32(min(max(endpoint.weight, 1), _MAX_WEIGHT)),
    )
    if endpoint.metadata:
        lb_endpoint.metadata.CopyFrom(_metadata(endpoint.metadata))
    return lb_endpoint


def _locality_key(endpoint: Endpoint) -> tuple[int, str, str]:
    return (min(max(endpoint.priority, 0), MAX_PRIORITY), endpoint.region, endpoint.zone)


def load_assignment(service: Service) -> Message:
    """The endpoints of ``service``, memoised by identity (sources hand over unchanged
    ``Service`` objects as they are, and hashing 10 endpoints was half the cost of a
    one-service change at 1,000 services), then by value."""
    return _by_identity(service)


@lru_cache(maxsize=8192)
def _load_assignment(service: Service) -> Message:
    """The endpoints of ``service``; the assignment is named after the service (its cluster)."""
    return assignment(service.name, service.endpoints)


def assignment(cluster_name: str, endpoints: Iterable[Endpoint]) -> Message:
    """The usable ``endpoints`` as the assignment of ``cluster_name`` (uncached: callers
    cache per service or subset)."""
    groups: dict[tuple[int, str, str], list[Endpoint]] = {}
    for endpoint in endpoints:
        if usable(endpoint):
            groups.setdefault(_locality_key(endpoint), []).append(endpoint)
    localities = [
        endpoint_components_pb2.LocalityLbEndpoints(
            locality=base_pb2.Locality(region=region, zone=zone),
            priority=priority,
            lb_endpoints=[
                _lb_endpoint(endpoint)
                for endpoint in sorted(members, key=lambda e: (e.address, e.port))
            ],
        )
        for (priority, region, zone), members in sorted(groups.items())
    ]
    result: Message = endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster_name, endpoints=localities
    )
    return result


def empty_load_assignment(name: str) -> Message:
    """For a referenced service with no instances: Envoy answers 503 until some appear."""
    return load_assignment(Service(name))


def clear_caches() -> None:
    """Forget every memoised assignment (tests prove the caches change nothing)."""
    _by_identity.clear()
    _load_assignment.cache_clear()


_by_identity: IdentityMemo[Service, Message] = IdentityMemo(_load_assignment)
