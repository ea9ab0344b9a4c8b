"""Envoy resources built by hand for tests that exercise the cache and server directly."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, grpc_service_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2, duration_pb2

from xds_server.cache.snapshot import Snapshot


def ads_source() -> Any:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def grpc_source(api_type: str = "GRPC", cluster_name: str = "xds_server") -> Any:
    """A per-type (non-ADS) gRPC config source, for Envoys that do not use ADS."""
    return config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.ApiType.Value(api_type),
            transport_api_version=config_source_pb2.V3,
            grpc_services=[
                grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster_name)
                )
            ],
        ),
        resource_api_version=config_source_pb2.V3,
    )


def cluster(name: str, connect_timeout_ms: int = 1000, source: Any = None) -> Any:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=source or ads_source()),
        connect_timeout=duration_pb2.Duration(
            seconds=connect_timeout_ms // 1000, nanos=(connect_timeout_ms % 1000) * 1_000_000
        ),
    )


def endpoints(name: str, *ports: int, host: str = "127.0.0.1") -> Any:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=address_pb2.Address(
                                socket_address=address_pb2.SocketAddress(
                                    address=host, port_value=port
                                )
                            )
                        )
                    )
                    for port in ports
                ]
            )
        ],
    )


def route_config(name: str, cluster_name: str, prefix: str = "/") -> Any:
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="all",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=prefix),
                        route=route_components_pb2.RouteAction(cluster=cluster_name),
                    )
                ],
            )
        ],
    )


def listener(
    name: str, port: int, route_name: str, host: str = "127.0.0.1", source: Any = None
) -> Any:
    router = any_pb2.Any()
    router.Pack(router_pb2.Router())
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(config_source=source or ads_source(), route_config_name=route_name),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=router)],
    )
    packed = any_pb2.Any()
    packed.Pack(manager)
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=host, port_value=port)
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=packed
                    )
                ]
            )
        ],
    )


def secret(name: str, value: str = "not-a-real-secret") -> Any:
    return secret_pb2.Secret(
        name=name,
        generic_secret=secret_pb2.GenericSecret(secret=base_pb2.DataSource(inline_string=value)),
    )


def snapshot(
    cluster_name: str = "web",
    ports: tuple[int, ...] = (8081,),
    listener_name: str = "http",
    listener_port: int = 10000,
    route_name: str | None = None,
) -> Snapshot:
    """A consistent snapshot: one listener → one route → one cluster → its endpoints."""
    route_name = route_name or listener_name
    return Snapshot.build(
        [
            cluster(cluster_name),
            endpoints(cluster_name, *ports),
            listener(listener_name, listener_port, route_name),
            route_config(route_name, cluster_name),
        ]
    )
