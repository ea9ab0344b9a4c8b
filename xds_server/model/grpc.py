"""``Match.grpc``: a gRPC service, and optionally one of its methods.

A gRPC call is an HTTP/2 POST to ``/<package.Service>/<Method>``, so the match is a path
match: ``/<service>/<method>`` exactly, or every method of the service.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, Field

from xds_server.model.base import StrictModel
from xds_server.model.errors import invalid

#: A fully qualified protobuf service name (``pkg.sub.Service``), as gRPC writes it.
_SERVICE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
#: A protobuf identifier.
_METHOD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_NAME: Final = 256


def _check_service(value: str) -> str:
    if not _SERVICE.fullmatch(value) or ".." in value or value.endswith("."):
        raise invalid(
            "grpc_service",
            f"{value!r} is not a gRPC service name (e.g. 'pkg.Echo': letters, digits, '_' "
            "and '.' between names, not starting with a digit)",
        )
    return value


def _check_method(value: str) -> str:
    if not _METHOD.fullmatch(value):
        raise invalid(
            "grpc_method",
            f"{value!r} is not a gRPC method name (letters, digits and '_', not starting "
            "with a digit)",
        )
    return value


GrpcService = Annotated[
    str,
    Field(min_length=1, max_length=_MAX_NAME, json_schema_extra={"pattern": _SERVICE.pattern}),
    AfterValidator(_check_service),
]
GrpcMethod = Annotated[
    str,
    Field(min_length=1, max_length=_MAX_NAME, json_schema_extra={"pattern": _METHOD.pattern}),
    AfterValidator(_check_method),
]


class GrpcMatch(StrictModel):
    """``service`` (``pkg.Echo``) and, optionally, ``method`` (``Say``)."""

    service: GrpcService
    method: GrpcMethod | None = None

    @property
    def path(self) -> str:
        """``/pkg.Echo/Say`` for a method, ``/pkg.Echo`` (a segment prefix) for a service."""
        if self.method is None:
            return f"/{self.service}"
        return f"/{self.service}/{self.method}"
