"""The named schemas of ``api/openapi.json``: bodies, results and problem details.

Handlers decode and encode bodies themselves, so FastAPI does not see these models; they are
added to the generated document here, under ``#/components/schemas/{ModelName}``, where the
routes' ``$ref``\\ s point.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, RootModel
from pydantic.json_schema import models_json_schema

from xds_server.admin.kinds import resource_kinds
from xds_server.admin.openapi.schemas import (
    CurrentRevision,
    HistoryPage,
    RevisionView,
    RollbackRequest,
    WriteResult,
    body_model,
    list_model,
    stored_model,
)
from xds_server.admin.problem import ProblemDetails
from xds_server.model import Document


@cache
def document_list() -> type[BaseModel]:
    """The apply body: documents of any kind (built on first use: the union is large)."""

    class DocumentList(RootModel[list[Document]]):
        """Documents of any kind, each ``{kind, name, spec}``."""

    return DocumentList


def component_models() -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = [
        ProblemDetails,
        WriteResult,
        HistoryPage,
        RevisionView,
        CurrentRevision,
        RollbackRequest,
        document_list(),
    ]
    for kind in resource_kinds():
        models += [body_model(kind), stored_model(kind)]
        if kind.singleton is None:
            models.append(list_model(kind))
    return models


def add_components(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the named schemas to a generated document (idempotent); a name used by two
    different schemas is an error, not a silent overwrite."""
    _, found = models_json_schema(
        [(model, "validation") for model in component_models()],
        ref_template="#/components/schemas/{model}",
    )
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in found.get("$defs", {}).items():
        if name in schemas and schemas[name] != schema:
            raise RuntimeError(f"two different OpenAPI schemas are named {name!r}")
        schemas[name] = schema
    return openapi
