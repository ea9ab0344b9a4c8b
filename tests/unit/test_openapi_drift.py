"""``api/openapi.json`` is the published contract: it must be what the code generates."""

from __future__ import annotations

import json
from pathlib import Path

from xds_server.admin.openapi.document import REGENERATE, openapi_document, render

CHECKED_IN = Path(__file__).resolve().parents[2] / "api" / "openapi.json"


def test_the_checked_in_openapi_document_is_up_to_date() -> None:
    generated = render(openapi_document())
    assert CHECKED_IN.exists(), f"api/openapi.json is missing; generate it: {REGENERATE}"
    current = CHECKED_IN.read_text()
    assert current == generated, (
        f"api/openapi.json differs from what the code generates; regenerate it: {REGENERATE}"
    )


def test_generation_is_deterministic() -> None:
    assert render(openapi_document()) == render(openapi_document())


def test_the_document_describes_bodies_and_problems() -> None:
    document = json.loads(CHECKED_IN.read_text())
    schemas = document["components"]["schemas"]
    for name in ("RouteBody", "StoredRoute", "RouteSpec", "ProblemDetails", "DocumentList"):
        assert name in schemas, name
    put = document["paths"]["/v1/routes/{name}"]["put"]
    assert put["requestBody"]["content"]["application/yaml"]["schema"] == {
        "$ref": "#/components/schemas/RouteBody"
    }
    problem = put["responses"]["422"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/ProblemDetails"}
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 shape is never answered
