"""Header ``set``/``add``/``remove`` filters -> Envoy's headers_to_add/headers_to_remove.

Values are literal: Envoy reads ``%...%`` in added header values as command operators
(``%DOWNSTREAM_REMOTE_ADDRESS%``) and rejects a stray ``%``, so every ``%`` is escaped.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2

from xds_server.model.route import HeaderMutation

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def literal(value: str) -> str:
    """``value`` as Envoy's header formatter reads it: ``%`` doubled."""
    return value.replace("%", "%%")


def headers_to_add(mutation: HeaderMutation) -> list[Any]:
    """``set`` entries then ``add`` entries, each sorted by name (stable output)."""
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=literal(value)), append_action=action
        )
        for entries, action in ((mutation.set, _OVERWRITE), (mutation.add, _APPEND))
        for name, value in sorted(entries.items())
    ]


def apply_header_mutations(
    route: Any, request: HeaderMutation | None, response: HeaderMutation | None
) -> None:
    """Set the header fields of an Envoy ``Route``."""
    if request is not None:
        route.request_headers_to_add.extend(headers_to_add(request))
        route.request_headers_to_remove.extend(request.remove)
    if response is not None:
        route.response_headers_to_add.extend(headers_to_add(response))
        route.response_headers_to_remove.extend(response.remove)
