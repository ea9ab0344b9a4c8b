"""Capture what a running xds-server serves (via the Fetch RPCs) for the wire baseline."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from bench.baseline import Captured, CapturedType
from bench.simulator.wire import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceDecoder
from xds_server.cache import encoding
from xds_server.cache.snapshot import content_version

_FETCH = {
    CLUSTER: "/envoy.service.cluster.v3.ClusterDiscoveryService/FetchClusters",
    ENDPOINT: "/envoy.service.endpoint.v3.EndpointDiscoveryService/FetchEndpoints",
    LISTENER: "/envoy.service.listener.v3.ListenerDiscoveryService/FetchListeners",
    ROUTE: "/envoy.service.route.v3.RouteDiscoveryService/FetchRoutes",
}


def _captured(version: str, resources: list[tuple[str, str, bytes]]) -> CapturedType:
    """``resources``: (name, type URL, serialised message)."""
    sotw = []
    delta = []
    for name, type_url, body in sorted(resources):
        any_bytes = encoding.any_message(type_url, body)
        sotw.append(encoding.sotw_resource_field(any_bytes))
        delta.append(encoding.delta_resource_field(name, content_version(body), any_bytes))
    return CapturedType(version, b"".join(sotw), b"".join(delta))


def capture(ads: str, flap_service: str) -> Captured:
    """Every resource of the default group, plus two EDS pushes for ``flap_service``: its first
    endpoint unhealthy, then healthy again (what an endpoint flap sends)."""
    decoder = ResourceDecoder()
    types: dict[str, CapturedType] = {}
    endpoints: dict[str, bytes] = {}
    with grpc.insecure_channel(
        ads, options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    ) as channel:
        for type_url, method in _FETCH.items():
            fetch = channel.unary_unary(
                method,
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
            )
            request = discovery_pb2.DiscoveryRequest(type_url=type_url)
            request.node.id = "bench-capture"
            request.node.cluster = "default"
            response: Any = fetch(request, timeout=60)
            resources = []
            for packed in response.resources:
                name = decoder.decode(type_url, packed.value).name
                resources.append((name, type_url, bytes(packed.value)))
                if type_url == ENDPOINT:
                    endpoints[name] = bytes(packed.value)
            types[type_url] = _captured(str(response.version_info), resources)
    original = endpoints[flap_service]
    flapped: Any = endpoint_pb2.ClusterLoadAssignment.FromString(original)
    flapped.endpoints[0].lb_endpoints[0].health_status = health_check_pb2.HealthStatus.UNHEALTHY
    pushes = []
    for body in (flapped.SerializeToString(deterministic=True), original):
        pushes.append(_captured(content_version(body), [(flap_service, ENDPOINT, body)]))
    return Captured(types, pushes)


def save(captured: Captured, path: Path) -> Path:
    path.write_bytes(pickle.dumps(captured))
    return path
