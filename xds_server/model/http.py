"""HTTP vocabulary shared by routes and policies: header names and values, paths, methods."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, Field

from xds_server.model.errors import invalid

#: RFC 9110 token characters; a header name is a token.
TOKEN_PATTERN: Final = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
_TOKEN = re.compile(TOKEN_PATTERN)
_TOKEN_CHARS: Final = "use letters, digits and !#$%&'*+.^_`|~-"
#: Envoy's limit on one header's name and value (``HeaderValue`` validation rules).
MAX_HEADER_BYTES: Final = 16_384
MAX_PATH_LENGTH: Final = 1024


class HttpMethod(StrEnum):
    GET = "GET"
    HEAD = "HEAD"
    POST = "POST"
    PUT = "PUT"
    DELETE = "DELETE"
    CONNECT = "CONNECT"
    OPTIONS = "OPTIONS"
    TRACE = "TRACE"
    PATCH = "PATCH"


def _check_header_name(value: str) -> str:
    """Any header, including HTTP/2 pseudo-headers such as ``:authority``, may be matched."""
    name = value[1:] if value.startswith(":") else value
    if not name or len(value) > MAX_HEADER_BYTES or not _TOKEN.fullmatch(name):
        raise invalid("header_name", f"{value!r} is not a valid header name: {_TOKEN_CHARS}")
    return value


def _check_mutable_header_name(value: str) -> str:
    """Envoy refuses to add, set or remove pseudo-headers and ``host``."""
    if len(value) > MAX_HEADER_BYTES or not _TOKEN.fullmatch(value):
        raise invalid("header_name", f"{value!r} is not a valid header name: {_TOKEN_CHARS}")
    if value.lower() == "host":
        raise invalid(
            "header_name",
            "the host header cannot be modified here; use rewrite.hostname instead",
        )
    return value


def _check_header_value(value: str) -> str:
    if len(value.encode()) > MAX_HEADER_BYTES:
        raise invalid("header_value", f"a header value must be at most {MAX_HEADER_BYTES} bytes")
    if any(char in value for char in "\x00\r\n"):
        raise invalid("header_value", "a header value must not contain NUL, CR or LF")
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise invalid("path", f"{value!r} must start with '/'")
    if len(value) > MAX_PATH_LENGTH:
        raise invalid("path", f"a path must be at most {MAX_PATH_LENGTH} characters")
    for char in value:
        if not "\x21" <= char <= "\x7e" or char in "?#\\":
            raise invalid(
                "path",
                f"{value!r} contains {char!r}: a path is printable ASCII without spaces, '?', "
                "'#' or '\\' (percent-encode anything else)",
            )
    return value


#: A header to match on (``:authority`` and other pseudo-headers allowed).
HeaderName = Annotated[
    str,
    AfterValidator(_check_header_name),
    Field(json_schema_extra={"pattern": r"^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$"}),
]
#: A header that may be set, added or removed: not a pseudo-header, not ``host``.
MutableHeaderName = Annotated[
    str,
    AfterValidator(_check_mutable_header_name),
    Field(json_schema_extra={"pattern": TOKEN_PATTERN}),
]


def _check_non_empty(value: str) -> str:
    if not value:
        raise invalid("too_short", "must not be empty")
    return value


HeaderValue = Annotated[str, AfterValidator(_check_header_value)]
#: A header value prefix: Envoy requires at least one character.
HeaderValuePrefix = Annotated[
    str, AfterValidator(_check_non_empty), AfterValidator(_check_header_value)
]
#: An absolute request path, as sent on the wire (percent-encoded).
Path = Annotated[
    str, AfterValidator(_check_path), Field(json_schema_extra={"pattern": r'^/[!"$->@-\[\]-~]*$'})
]
