"""Request bodies: JSON or YAML in, plain Python values out, syntax errors as 400 / 415.

Bodies are decoded here (with ``model.text``) rather than by FastAPI so that YAML (what
operators keep their config in) is accepted wherever JSON is, and so every error names the
line. The size limit is enforced earlier, by ``middleware.limits.BodySizeLimit``.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request

from xds_server.admin.problem import ApiError, item
from xds_server.model.text import TextError, parse_json, parse_yaml

JSON: Final = "application/json"
YAML: Final = "application/yaml"
_YAML_TYPES: Final = frozenset({YAML, "application/x-yaml", "text/yaml", "text/x-yaml"})


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters; JSON when none is sent."""
    value = request.headers.get("content-type", "")
    return value.split(";", 1)[0].strip().lower() or JSON


def is_json(media: str) -> bool:
    return media == JSON or media.endswith("+json")


def is_yaml(media: str) -> bool:
    return media in _YAML_TYPES or media.endswith("+yaml")


async def read_values(request: Request) -> list[Any]:
    """The body's values: one for JSON, one per non-empty document of a YAML stream."""
    media = media_type(request)
    if not (is_json(media) or is_yaml(media)):
        raise ApiError(
            415,
            "unsupported-media-type",
            f"cannot read a body of type {media!r}: send the header Content-Type: {JSON} or "
            f"Content-Type: {YAML} (curl -d sends application/x-www-form-urlencoded unless "
            f"given -H 'Content-Type: {JSON}')",
            [item("header.content-type", f"expected {JSON} or {YAML}, not {media!r}")],
        )
    raw = await request.body()
    try:
        return [parse_json(raw)] if is_json(media) else parse_yaml(raw)
    except TextError as error:
        raise _syntax_error(error) from None


def _syntax_error(error: TextError) -> ApiError:
    return ApiError(
        400,
        "malformed-body",
        f"the body is {error}",
        [item("body", error.reason, line=error.line, column=error.column)],
    )
