"""Small builders of common Envoy/protobuf values."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import config_source_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from xds_server.model.duration import Duration


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
