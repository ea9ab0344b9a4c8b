"""A listener's ``telemetry`` and ``metrics`` -> HCM tracing, collector and admin clusters.

Tracing sends spans to ``tracing/<listener>``, a cluster made from ``collector`` (HTTP/2 for
OTLP/gRPC). A ``metrics`` listener's route configuration answers its ``path`` from
``metrics/<listener>``, a static cluster pointing at Envoy's admin address, with the path
rewritten to ``/stats/prometheus``: nothing else of the admin interface is reachable.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from envoy.config.core.v3 import grpc_service_pb2, protocol_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.config.route.v3 import route_pb2 as route_configuration_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf.message import Message

from xds_server.model.telemetry import Metrics, Tracing, TracingProvider, split_host_port
from xds_server.translate.protos import ONE_SECOND, host_cluster, pack

OPENTELEMETRY: Final = "envoy.tracers.opentelemetry"
ZIPKIN: Final = "envoy.tracers.zipkin"
HTTP_PROTOCOL_OPTIONS: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
PROMETHEUS_PATH: Final = "/stats/prometheus"


def tracing_cluster_name(listener: str) -> str:
    return f"tracing/{listener}"


def metrics_cluster_name(listener: str) -> str:
    return f"metrics/{listener}"


@lru_cache(maxsize=1024)
def tracing_cluster(listener: str, tracing: Tracing) -> Message:
    host, port = split_host_port(tracing.collector)
    result = host_cluster(tracing_cluster_name(listener), host, port, ONE_SECOND)
    if tracing.provider is TracingProvider.OPENTELEMETRY:
        options = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        )
        result.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))
    message: Message = result
    return message


@lru_cache(maxsize=1024)
def metrics_cluster(listener: str, metrics: Metrics) -> Message:
    host, port = split_host_port(metrics.admin_address)
    message: Message = host_cluster(metrics_cluster_name(listener), host, port, ONE_SECOND)
    return message


def tracing(listener: str, settings: Tracing) -> Any:
    """The connection manager's ``tracing``."""
    cluster = tracing_cluster_name(listener)
    if settings.provider is TracingProvider.OPENTELEMETRY:
        config: Any = opentelemetry_pb2.OpenTelemetryConfig(
            grpc_service=grpc_service_pb2.GrpcService(
                envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster)
            )
        )
        if settings.service_name is not None:
            config.service_name = settings.service_name
        name = OPENTELEMETRY
    else:
        host, _ = split_host_port(settings.collector)
        config = zipkin_pb2.ZipkinConfig(
            collector_cluster=cluster,
            collector_endpoint=settings.zipkin_path,
            collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
            collector_hostname=host,
        )
        name = ZIPKIN
    return hcm_pb2.HttpConnectionManager.Tracing(
        random_sampling=percent_pb2.Percent(value=settings.sampling),
        custom_tags=[
            custom_tag_pb2.CustomTag(tag=tag, literal=custom_tag_pb2.CustomTag.Literal(value=value))
            for tag, value in sorted(settings.tags.items())
        ],
        provider=http_tracer_pb2.Tracing.Http(name=name, typed_config=pack(config)),
    )


@lru_cache(maxsize=256)
def metrics_route_configuration(listener: str, metrics: Metrics) -> Message:
    """Every host: ``metrics.path`` -> Envoy's ``/stats/prometheus``; anything else 404."""
    result: Message = route_configuration_pb2.RouteConfiguration(
        name=listener,
        virtual_hosts=[
            route_pb2.VirtualHost(
                name="metrics",
                domains=["*"],
                routes=[
                    route_pb2.Route(
                        name="metrics",
                        match=route_pb2.RouteMatch(path=metrics.path),
                        route=route_pb2.RouteAction(
                            cluster=metrics_cluster_name(listener),
                            prefix_rewrite=PROMETHEUS_PATH,
                        ),
                    )
                ],
            )
        ],
    )
    return result
