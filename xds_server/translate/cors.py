"""``filters.cors`` -> Envoy's CORS filter: on the listener when some rule uses it, and the
rule's ``CorsPolicy`` as its per-route config (without one the filter does nothing)."""

from __future__ import annotations

from typing import Any, Final

from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from xds_server.model.cors import Cors, OriginMatch
from xds_server.translate.matches import regex
from xds_server.translate.protos import pack

CORS: Final = "envoy.filters.http.cors"


def cors_filter() -> Any:
    """The listener's filter: its settings all come from the routes."""
    return pack(cors_pb2.Cors())


def _origin(origin: OriginMatch) -> Any:
    if origin.exact is not None:
        return string_pb2.StringMatcher(exact=origin.exact)
    if origin.prefix is not None:
        return string_pb2.StringMatcher(prefix=origin.prefix)
    return string_pb2.StringMatcher(safe_regex=regex(origin.regex or ""))


def cors_policy(cors: Cors) -> Any:
    result = cors_pb2.CorsPolicy(
        allow_origin_string_match=[_origin(origin) for origin in cors.allow_origins],
        allow_methods=",".join(method.value for method in cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
    )
    if cors.allow_credentials:
        result.allow_credentials.CopyFrom(wrappers_pb2.BoolValue(value=True))
    if cors.max_age is not None:
        result.max_age = str(cors.max_age.milliseconds // 1000)
    return pack(result)
