"""A ``Listener`` document -> an Envoy ``Listener`` with one HTTP connection manager.

Routes come over RDS (ADS), in a ``RouteConfiguration`` named after the listener.

An https listener gets one filter chain per ``sni`` entry of its TLS policy (matched on the
client's server name by the TLS inspector) and a default chain with the policy's
``certificates``; every chain has the same connection manager. Certificates are referred to
by SDS name only, so a rotated certificate leaves the listener byte for byte the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2, substitution_format_string_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from xds_server.model.listener import ListenerSpec
from xds_server.model.tls import ClientCertificate, DownstreamTls, ForwardDetail
from xds_server.translate.auth import token_failures_as_401
from xds_server.translate.edge import NO_EDGE_FILTERS, EdgeFilters
from xds_server.translate.protos import ads, duration, pack, uint32
from xds_server.translate.telemetry import tracing
from xds_server.translate.tls import downstream_socket
from xds_server.translate.upgrades import listener_upgrades

HTTP_CONNECTION_MANAGER: Final = "envoy.filters.network.http_connection_manager"
ROUTER: Final = "envoy.filters.http.router"
STDOUT_ACCESS_LOG: Final = "envoy.access_loggers.stdout"
TLS_INSPECTOR: Final = "envoy.filters.listener.tls_inspector"

#: One JSON object per request; the keys are ours, the values Envoy's command operators.
ACCESS_LOG_FIELDS: Final = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "route_name": "%ROUTE_NAME%",
}


def json_access_log(fields: Mapping[str, str]) -> Any:
    """An access log writing one JSON object of ``fields`` (Envoy's command operators) per
    request or connection to Envoy's stdout."""
    struct = struct_pb2.Struct()
    struct.update(dict(fields))
    stdout = stream_pb2.StdoutAccessLog(
        log_format=substitution_format_string_pb2.SubstitutionFormatString(json_format=struct)
    )
    return accesslog_pb2.AccessLog(name=STDOUT_ACCESS_LOG, typed_config=pack(stdout))


def _access_log(listener: str) -> Any:
    return json_access_log({**ACCESS_LOG_FIELDS, "listener": listener})


def _forward_client_cert(manager: Any, client: ClientCertificate | None) -> None:
    """Put the verified client certificate's details in ``x-forwarded-client-cert``."""
    if client is None or not client.forward_details:
        return  # Envoy's default, SANITIZE: the header never reaches a service from a client
    manager.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
    details = manager.set_current_client_cert_details
    for detail in client.forward_details:
        if detail is ForwardDetail.SUBJECT:
            details.subject.CopyFrom(wrappers_pb2.BoolValue(value=True))
        else:
            setattr(details, detail.value, True)


def _connection_manager(
    name: str, spec: ListenerSpec, tls: DownstreamTls | None, edge: EdgeFilters
) -> Any:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=name),
        http_filters=[
            *edge.http_filters(name),
            hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router())),
        ],
        # Route hostnames carry no port, but clients send one on any non-default port
        # ("Host: shop.example.com:10000"), which no virtual host's domain would match: match
        # on the host alone, as Gateway API implementations (Envoy Gateway, Contour) do.
        strip_any_host_port=True,
    )
    if spec.access_log:
        manager.access_log.append(_access_log(name))
    http = spec.http
    if http.idle_timeout is not None:
        manager.common_http_protocol_options.CopyFrom(
            protocol_pb2.HttpProtocolOptions(idle_timeout=duration(http.idle_timeout))
        )
    if http.max_request_headers_kb is not None:
        manager.max_request_headers_kb.CopyFrom(uint32(http.max_request_headers_kb))
    if http.use_remote_address:
        manager.use_remote_address.CopyFrom(wrappers_pb2.BoolValue(value=True))
    if http.xff_num_trusted_hops:
        manager.xff_num_trusted_hops = http.xff_num_trusted_hops
    manager.upgrade_configs.extend(listener_upgrades(http.upgrades, edge.features.upgrades))
    if tls is not None:
        _forward_client_cert(manager, tls.client_certificate)
    if edge.auth_policies:
        manager.local_reply_config.CopyFrom(token_failures_as_401())
    telemetry = spec.telemetry
    if not telemetry.request_id:
        manager.generate_request_id.CopyFrom(wrappers_pb2.BoolValue(value=False))
    if telemetry.tracing is not None:
        manager.tracing.CopyFrom(tracing(name, telemetry.tracing))
    return manager


def _filter_chains(manager: Any, tls: DownstreamTls | None) -> list[Any]:
    filters = [listener_components_pb2.Filter(name=HTTP_CONNECTION_MANAGER, typed_config=manager)]
    if tls is None:
        return [listener_components_pb2.FilterChain(filters=filters)]
    chains = [
        listener_components_pb2.FilterChain(
            name=f"sni[{index}]",
            filter_chain_match=listener_components_pb2.FilterChainMatch(
                server_names=list(entry.server_names)
            ),
            filters=filters,
            transport_socket=downstream_socket(tls, entry.certificates),
        )
        for index, entry in enumerate(tls.sni)
    ]
    if tls.certificates:
        chains.append(
            listener_components_pb2.FilterChain(
                name="default",
                filters=filters,
                transport_socket=downstream_socket(tls, tls.certificates),
            )
        )
    return chains


@lru_cache(maxsize=1024)
def listener(
    name: str,
    spec: ListenerSpec,
    tls: DownstreamTls | None = None,
    edge: EdgeFilters = NO_EDGE_FILTERS,
) -> Message:
    """The Envoy listener of ``spec``; ``tls`` is the downstream part of its TLS policy
    (given exactly when the listener is https); ``edge`` the filters its policies need."""
    manager = pack(_connection_manager(name, spec, tls, edge))
    result = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=spec.address, port_value=spec.port)
        ),
        filter_chains=_filter_chains(manager, tls),
    )
    if tls is not None and tls.sni:
        result.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
            )
        )
    message: Message = result
    return message
