"""Client Status Discovery Service: what each connected proxy was sent and what it did.

The same facts as ``GET /v1/proxies``, in Envoy's own CSDS shape, on the ADS port, so tools
built for CSDS (``istioctl``-like, Envoy's ``--mode`` dumps) work unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import re2
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2
from google.protobuf import any_pb2, json_format, timestamp_pb2

from xds_server.cache.clients import client_type
from xds_server.cache.redaction import redacted_body
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import PUSH_ORDER
from xds_server.status import ProxyRegistry, ProxyStatus, SyncStatus, TypeStatus

SERVICE = "envoy.service.status.v3.ClientStatusDiscoveryService"

_CONFIG_STATUS = {
    SyncStatus.SYNCED: csds_pb2.SYNCED,
    SyncStatus.STALE: csds_pb2.STALE,
    SyncStatus.NOT_SENT: csds_pb2.NOT_SENT,
    SyncStatus.NACKED: csds_pb2.ERROR,
}
_CLIENT_STATUS = {
    SyncStatus.SYNCED: config_dump_shared_pb2.ACKED,
    SyncStatus.STALE: config_dump_shared_pb2.REQUESTED,
    SyncStatus.NOT_SENT: config_dump_shared_pb2.REQUESTED,
    SyncStatus.NACKED: config_dump_shared_pb2.NACKED,
}


def string_matches(matcher: Any, value: str) -> bool:
    """Envoy's ``StringMatcher`` (exact, prefix, suffix, contains, RE2 regex, ignore_case)."""
    pattern = matcher.WhichOneof("match_pattern")
    fold = matcher.ignore_case and pattern != "safe_regex"
    subject = value.lower() if fold else value

    def expected(text: str) -> str:
        return text.lower() if fold else text

    if pattern == "exact":
        return bool(subject == expected(matcher.exact))
    if pattern == "prefix":
        return subject.startswith(expected(matcher.prefix))
    if pattern == "suffix":
        return subject.endswith(expected(matcher.suffix))
    if pattern == "contains":
        return expected(matcher.contains) in subject
    if pattern == "safe_regex":
        try:
            return re2.fullmatch(matcher.safe_regex.regex, value) is not None
        except re2.error:
            return False
    return False


def _metadata_value(node: Any, path: Iterable[Any]) -> Any:
    current: Any = json_format.MessageToDict(node.metadata) if node is not None else {}
    for segment in path:
        if not isinstance(current, dict) or segment.key not in current:
            return None
        current = current[segment.key]
    return current


def node_matches(matcher: Any, proxy: ProxyStatus) -> bool:
    if matcher.HasField("node_id") and not string_matches(matcher.node_id, proxy.node_id):
        return False
    for struct_matcher in matcher.node_metadatas:
        value = _metadata_value(proxy.node, struct_matcher.path)
        value_matcher = struct_matcher.value
        kind = value_matcher.WhichOneof("match_pattern")
        if kind == "string_match":
            if not isinstance(value, str) or not string_matches(value_matcher.string_match, value):
                return False
        elif kind == "present_match":
            if (value is not None) != value_matcher.present_match:
                return False
        elif kind == "bool_match":
            if value is not value_matcher.bool_match:
                return False
        else:
            return False
    return True


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    if seconds is not None:
        stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class ClientStatus:
    """Builds CSDS answers from the proxy registry and the current snapshots."""

    def __init__(self, cache: SnapshotCache, registry: ProxyRegistry) -> None:
        self.cache = cache
        self.registry = registry

    def response(self, request: Any) -> Any:
        answer = csds_pb2.ClientStatusResponse()
        include = not request.exclude_resource_contents
        for proxy in self.registry.proxies(include_disconnected=False):
            matchers = list(request.node_matchers)
            if matchers and not any(node_matches(m, proxy) for m in matchers):
                continue
            answer.config.append(self._client_config(proxy, include))
        return answer

    def _client_config(self, proxy: ProxyStatus, include: bool) -> Any:
        config = csds_pb2.ClientConfig()
        if proxy.node is not None:
            config.node.CopyFrom(proxy.node)
        else:
            config.node.CopyFrom(base_pb2.Node(id=proxy.node_id, cluster=proxy.group))
        snapshot = self.cache.snapshot_for(proxy.group, proxy.zone, client_type(proxy.node))
        for type_url in [t for t in PUSH_ORDER if t in proxy.types]:
            status = proxy.types[type_url]
            present = snapshot.of_type(type_url)
            for name in sorted(status.held):
                version = status.held[name]
                if not version:
                    continue  # told absent
                entry = self._entry(status, type_url, name, version)
                resource = present.get(name)
                if include and resource is not None and resource.version == version:
                    body = redacted_body(type_url, resource.body)
                    entry.xds_config.CopyFrom(any_pb2.Any(type_url=type_url, value=body))
                config.generic_xds_configs.append(entry)
        return config

    @staticmethod
    def _entry(status: TypeStatus, type_url: str, name: str, version: str) -> Any:
        sync = status.status
        entry = csds_pb2.ClientConfig.GenericXdsConfig(
            type_url=type_url,
            name=name,
            version_info=version,
            config_status=_CONFIG_STATUS[sync],
            client_status=_CLIENT_STATUS[sync],
            last_updated=_timestamp(status.sent_at),
        )
        if sync is SyncStatus.NACKED and status.last_nack is not None:
            nack = status.last_nack
            entry.error_state.CopyFrom(
                config_dump_shared_pb2.UpdateFailureState(
                    details=nack.message,
                    version_info=nack.version,
                    last_update_attempt=_timestamp(nack.at),
                )
            )
        return entry


def csds_handler(cache: SnapshotCache, registry: ProxyRegistry) -> grpc.GenericRpcHandler:
    status = ClientStatus(cache, registry)

    async def fetch(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return status.response(request)

    async def stream(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for request in requests:
            yield status.response(request)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "FetchClientStatus": grpc.unary_unary_rpc_method_handler(
                fetch,
                request_deserializer=csds_pb2.ClientStatusRequest.FromString,
                response_serializer=csds_pb2.ClientStatusResponse.SerializeToString,
            ),
            "StreamClientStatus": grpc.stream_stream_rpc_method_handler(
                stream,
                request_deserializer=csds_pb2.ClientStatusRequest.FromString,
                response_serializer=csds_pb2.ClientStatusResponse.SerializeToString,
            ),
        },
    )
