"""OpenAPI fragments shared by the routers: problem responses, bodies, headers."""

from __future__ import annotations

from typing import Any, Final

from xds_server.admin.body import JSON, YAML
from xds_server.admin.problem import PROBLEM_JSON

_PROBLEMS: Final = {
    400: "Malformed body (JSON or YAML syntax, with the line) or page token.",
    404: "No such document (or revision).",
    409: "The document is still referenced; `errors` names the referrers.",
    412: "`If-Match` / `If-None-Match` does not hold.",
    413: "The body is larger than the limit (1 MiB by default).",
    415: "The body is neither JSON nor YAML.",
    422: "Invalid: `errors` lists every field and reason.",
    503: "The config store is unavailable; retry later.",
}

ETAG_HEADER: Final = {
    "ETag": {
        "description": "The document's strong ETag: its revision, quoted.",
        "schema": {"type": "string"},
    }
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def response(
    description: str, schema: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    found: dict[str, Any] = {"description": description}
    if schema is not None:
        found["content"] = json_content(schema)
    if headers:
        found["headers"] = headers
    return found


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Problem-details responses for ``statuses``, with 422 (any invalid parameter) and 503
    (any request may meet an unavailable store)."""
    return {
        status: {
            "description": _PROBLEMS[status],
            "content": {PROBLEM_JSON: {"schema": ref("ProblemDetails")}},
        }
        for status in sorted({*statuses, 422, 503})
    }


def request_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An ``openapi_extra`` request body, in JSON or YAML."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {JSON: {"schema": schema}, YAML: {"schema": schema}},
        }
    }


def query_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }
