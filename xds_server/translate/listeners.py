"""A ``Listener`` document -> an Envoy ``Listener`` with one HTTP connection manager.

Routes come over RDS (ADS), in a ``RouteConfiguration`` named after the listener.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2, substitution_format_string_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from xds_server.model.listener import ListenerSpec
from xds_server.translate.protos import ads, duration, pack, uint32

HTTP_CONNECTION_MANAGER: Final = "envoy.filters.network.http_connection_manager"
ROUTER: Final = "envoy.filters.http.router"
STDOUT_ACCESS_LOG: Final = "envoy.access_loggers.stdout"

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


def _access_log(listener: str) -> Any:
    fields = struct_pb2.Struct()
    fields.update({**ACCESS_LOG_FIELDS, "listener": listener})
    stdout = stream_pb2.StdoutAccessLog(
        log_format=substitution_format_string_pb2.SubstitutionFormatString(json_format=fields)
    )
    return accesslog_pb2.AccessLog(name=STDOUT_ACCESS_LOG, typed_config=pack(stdout))


def _connection_manager(name: str, spec: ListenerSpec) -> Any:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=name),
        http_filters=[hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router()))],
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
    return manager


@lru_cache(maxsize=1024)
def listener(name: str, spec: ListenerSpec) -> Message:
    result: Message = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=spec.address, port_value=spec.port)
        ),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name=HTTP_CONNECTION_MANAGER,
                        typed_config=pack(_connection_manager(name, spec)),
                    )
                ]
            )
        ],
    )
    return result
