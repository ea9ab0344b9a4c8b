"""The shapes of request and response bodies, as pydantic models for the OpenAPI document.

Handlers build their JSON directly (``views``) and decode bodies themselves (``body``); these
models describe those bodies in ``api/openapi.json``, and the schemathesis test checks that
the responses really have these shapes. Per-kind models are made on first use, not at import.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from xds_server.admin.kinds import ResourceKind
from xds_server.admin.problem import ErrorItem
from xds_server.model.names import Name


class DocumentMeta(BaseModel):
    revision: int = Field(description="The revision of the document's last change; its ETag.")
    updated_at: str = Field(description="RFC 3339, UTC.", json_schema_extra={"format": "date-time"})
    warnings: list[ErrorItem] = Field(
        description="Accepted but worth knowing, e.g. a backend service with no instances."
    )


@cache
def stored_model(kind: ResourceKind) -> type[BaseModel]:
    """``{kind, name, spec, revision, updated_at, warnings}`` (and ``info`` for kinds that
    describe themselves, ``status`` for those with a live state): what reads answer."""
    extra: dict[str, Any] = {}
    if kind.info_model is not None:
        extra["info"] = (kind.info_model, Field(description="Read-only; computed on read."))
    if kind.status_model is not None:
        extra["status"] = (
            kind.status_model | None,
            Field(None, description="Read-only, GET only: the live state; null when unknown."),
        )
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"Stored{kind.kind.value}",
        __base__=(kind.info.document_model, DocumentMeta),
        __doc__=f"A {kind.kind.value} as stored. {kind.info.summary}",
        **extra,
    )


@cache
def body_model(kind: ResourceKind) -> type[BaseModel]:
    """What ``PUT /v1/{path}/{name}`` takes: the document; ``kind`` and ``name`` may be left
    out (the URL says them) but must match the URL when given."""
    fields = kind.info.document_model.model_fields
    kind_type: Any = fields["kind"].annotation
    # A singleton's one name (a Literal); other kinds' names keep their pattern.
    name_type: Any = fields["name"].annotation if kind.singleton is not None else Name
    return create_model(
        f"{kind.kind.value}Body",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"A {kind.kind.value} to create or replace. {kind.info.summary}",
        kind=(kind_type | None, None),
        name=(name_type | None, None),
        spec=(kind.info.spec_model, ...),
    )


@cache
def list_model(kind: ResourceKind) -> type[BaseModel]:
    items: Any = list[stored_model(kind)]  # type: ignore[misc]
    return create_model(
        f"{kind.kind.value}List",
        __doc__=f"A page of {kind.path}, by name.",
        items=(items, ...),
        next_page_token=(
            str | None,
            Field(None, description="Pass as page_token for the next page; null on the last."),
        ),
    )


class ChangeView(BaseModel):
    """One document changed by a write (or that a dry run would change)."""

    kind: str
    name: str
    operation: Literal["created", "updated", "deleted"]
    before: dict[str, Any] | None = Field(description="The spec before; null when created.")
    after: dict[str, Any] | None = Field(description="The spec after; null when deleted.")


class AppliedDocument(BaseModel):
    """The fate of one document of an apply."""

    kind: str
    name: str
    operation: Literal["created", "updated", "unchanged"]
    revision: int = Field(description="The document's revision after the apply (its ETag).")
    warnings: list[ErrorItem]


class WriteResult(BaseModel):
    """What a write did: an apply, a rollback, or a dry run of any write."""

    dry_run: bool
    base_revision: int = Field(description="The revision the write was applied to.")
    revision: int = Field(
        description="The new revision (for a dry run: the one it would be). Equal to "
        "base_revision when nothing changed."
    )
    changes: list[ChangeView]
    warnings: list[ErrorItem] = Field(description="Warnings about the changed documents.")
    envoy: dict[str, Any] | None = Field(
        None, description="Dry runs: what would change in the Envoy resources."
    )
    documents: list[AppliedDocument] | None = Field(
        None, description="Apply: every document sent, in order, with its operation."
    )


class HistoryEntryView(BaseModel):
    revision: int
    kind: str
    name: str
    operation: Literal["create", "update", "delete"]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    actor: str
    time: str = Field(json_schema_extra={"format": "date-time"})
    note: str | None


class HistoryPage(BaseModel):
    """History entries, newest revision first; a page never splits a revision."""

    items: list[HistoryEntryView]
    next_before_revision: int | None = Field(
        description="Pass as before_revision for the next (older) page; null on the last."
    )


class RevisionView(BaseModel):
    """Every change of one revision."""

    revision: int
    time: str = Field(json_schema_extra={"format": "date-time"})
    actor: str
    note: str | None
    changes: list[HistoryEntryView]


class CurrentRevision(BaseModel):
    revision: int


class RollbackRequest(BaseModel):
    """Make a new revision whose documents are exactly those of ``revision``."""

    model_config = ConfigDict(extra="forbid")

    revision: int = Field(ge=0, le=2**62, description="0 restores the empty config.")
    note: str | None = Field(None, max_length=1024, description="Recorded in history.")
