"""Request bodies: JSON or YAML in, plain Python values out, syntax errors as 400 / 415.

Bodies are decoded here rather than by FastAPI so that YAML (what operators keep their config
in) is accepted wherever JSON is, and so every error names the line. The size limit is
enforced earlier, by ``limits.BodySizeLimit``.
"""

from __future__ import annotations

import json
from typing import Any, Final

import yaml
from starlette.requests import Request

from xds_server.admin.problem import ApiError, item

JSON: Final = "application/json"
YAML: Final = "application/yaml"
_YAML_TYPES: Final = frozenset({YAML, "application/x-yaml", "text/yaml", "text/x-yaml"})
#: Extra nodes a YAML body may have beyond one per byte; aliases repeat nodes without bytes,
#: so a "billion laughs" body is stopped here instead of being expanded by validation.
_YAML_NODE_ALLOWANCE: Final = 1_000

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
            f"cannot read a body of type {media!r}: send {JSON} or {YAML}",
        )
    raw = await request.body()
    return [parse_json(raw)] if is_json(media) else parse_yaml(raw)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise _syntax_error("JSON", error.msg, error.lineno, error.colno) from None
    except UnicodeDecodeError as error:
        raise _syntax_error("JSON", f"not UTF-8: {error.reason}", None, None) from None
    except ValueError as error:  # NaN, Infinity; and numbers too long to convert
        raise _syntax_error("JSON", str(error), None, None) from None
    except RecursionError:
        raise _syntax_error("JSON", "nested too deeply", None, None) from None


def parse_yaml(raw: bytes) -> list[Any]:
    try:
        documents = [doc for doc in yaml.load_all(raw, Loader=_Loader) if doc is not None]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        reason = error.problem or error.context or "invalid YAML"
        if error.context and error.problem:
            reason = f"{error.problem} ({error.context})"
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise _syntax_error("YAML", reason, line, column) from None
    except yaml.YAMLError as error:  # e.g. a byte that cannot be decoded
        raise _syntax_error("YAML", str(error), None, None) from None
    except RecursionError:
        raise _syntax_error("YAML", "nested too deeply", None, None) from None
    if _too_many_nodes(documents, len(raw) + _YAML_NODE_ALLOWANCE):
        raise _syntax_error("YAML", "aliases expand to a document too large to accept", None, None)
    return documents


def _too_many_nodes(value: Any, budget: int) -> bool:
    stack = [value]
    while stack:
        budget -= 1
        if budget < 0:
            return True
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set):
            stack.extend(node)
    return False


def _syntax_error(language: str, reason: str, line: int | None, column: int | None) -> ApiError:
    where = f" at line {line}, column {column}" if line is not None else ""
    return ApiError(
        400,
        "malformed-body",
        f"the body is not valid {language}{where}: {reason}",
        [item("body", reason, line=line, column=column)],
    )
