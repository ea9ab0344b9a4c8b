"""Small builders of common Envoy/protobuf values."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from xds_server.model.addresses import is_ip_literal
from xds_server.model.duration import Duration

ONE_SECOND = duration_pb2.Duration(seconds=1)


def duration(value: Duration) -> duration_pb2.Duration:
    seconds, nanos = value.seconds_and_nanos
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def uint32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)


def pack(message: Message) -> any_pb2.Any:
    """``message`` in an ``Any``, serialised deterministically (stable bytes, stable hash)."""
    return any_pb2.Any(
        type_url="type.googleapis.com/" + message.DESCRIPTOR.full_name,
        value=message.SerializeToString(deterministic=True),
    )


def ads() -> Any:
    """ "Get it over the ADS stream you already have", in xDS v3."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def host_cluster(name: str, host: str, port: int, connect_timeout: duration_pb2.Duration) -> Any:
    """A cluster of one ``host:port`` outside the registry (a JWKS or tracing server):
    static for an IP literal, resolved by DNS otherwise."""
    kind = cluster_pb2.Cluster.STATIC if is_ip_literal(host) else cluster_pb2.Cluster.STRICT_DNS
    address = address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=address)
    )
    return cluster_pb2.Cluster(
        name=name,
        type=kind,
        connect_timeout=connect_timeout,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
    )
