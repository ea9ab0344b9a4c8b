"""Validation errors with a stable type and a message meant for an operator."""

from __future__ import annotations

from pydantic_core import PydanticCustomError


def invalid(error_type: str, message: str) -> PydanticCustomError:
    """An error pydantic reports verbatim (no "Value error, " prefix) at the field's location.

    No context is passed, so the message is never treated as a format template and may
    quote user input as is.
    """
    return PydanticCustomError(error_type, message)
