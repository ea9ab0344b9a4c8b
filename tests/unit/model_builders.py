"""Builders shared by the model and translate unit tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from xds_server.model import (
    Config,
    Endpoint,
    InvalidDocuments,
    Inventory,
    Problem,
    Service,
    parse_document,
)


def doc(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": kind, "name": name, "spec": spec}


def listener(name: str = "public", port: int = 8080, **spec: Any) -> dict[str, Any]:
    return doc("Listener", name, port=port, **spec)


def route(
    name: str = "web",
    listeners: Iterable[str] = ("public",),
    rules: Iterable[Mapping[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    if rules is None:
        rules = [{"backends": [{"service": "web"}]}]
    return doc("Route", name, listeners=list(listeners), rules=list(rules), **spec)


def problems(raw: Any) -> list[Problem]:
    """The problems of one raw document (empty when it parses)."""
    try:
        parse_document(raw)
    except InvalidDocuments as error:
        return error.problems
    return []


def error_at(raw: Any, field: str) -> str:
    """The reason of the problem at ``field``; fails if there is none there."""
    found = problems(raw)
    for problem in found:
        if problem.field == field:
            return problem.reason
    raise AssertionError(f"no problem at {field!r}; got {[str(p) for p in found]}")


def config_of(*documents: Mapping[str, Any]) -> Config:
    """A config of raw documents, created in the order given (revision 1, 2, ...)."""
    return Config.from_documents(
        (d["kind"], d["name"], d["spec"], revision) for revision, d in enumerate(documents, start=1)
    )


def inventory_of(**services: int) -> Inventory:
    """``web=2`` -> service ``web`` with two healthy instances on 10.0.0.x."""
    return Inventory.of(
        {
            name: Service(
                name, tuple(Endpoint(f"10.0.0.{index + 1}", 8000) for index in range(count))
            )
            for name, count in services.items()
        }
    )
