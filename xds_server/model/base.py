"""The base of every operator-config model: unknown fields are errors, values are immutable.

``extra="forbid"`` turns a typo (``retires: 3``) into a 422 naming the field instead of a
silently ignored setting. ``frozen=True`` makes parsed specs hashable, so translation can
cache per-service results keyed by the spec itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from xds_server.model.errors import invalid

T = TypeVar("T")


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown fields and cannot be mutated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _non_empty(values: Sequence[Any]) -> Sequence[Any]:
    if not values:
        raise invalid("too_short", "must list at least one item")
    return values


#: A tuple with at least one item. (``Field(min_length=1)`` would also report "0 items"
#: whenever an item is invalid, because pydantic counts only the items that validated.)
NonEmpty = Annotated[
    tuple[T, ...], AfterValidator(_non_empty), Field(json_schema_extra={"minItems": 1})
]
