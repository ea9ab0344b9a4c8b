"""What is wrong with operator config, said so an operator can find and fix it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True, order=True, slots=True)
class Problem:
    """``field`` is a path into the document, e.g. ``spec.rules[0].matches[1].path.regex``."""

    kind: str
    name: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}: {self.field}: {self.reason}"


def field_path(location: Sequence[int | str]) -> str:
    """``("spec", "rules", 0, "path")`` -> ``spec.rules[0].path``."""
    path = ""
    for part in location:
        if part == "[key]":  # pydantic's marker for "the key of this dict entry is invalid"
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def problems_from(
    error: ValidationError, kind: str, name: str, prefix: Sequence[int | str] = ()
) -> list[Problem]:
    """One problem per pydantic error, located by field path under ``prefix``."""
    return [
        Problem(kind, name, field_path((*prefix, *detail["loc"])), detail["msg"])
        for detail in error.errors(include_url=False)
    ]


class InvalidDocuments(ValueError):
    """Documents that do not parse; each problem names the document and field."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))
