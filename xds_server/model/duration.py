"""Durations as operators write them: ``"250ms"``, ``"5s"``, ``"1m"``, ``"1h"``, ``"1m30s"``.

A parsed :class:`Duration` is an exact count of milliseconds (Envoy accepts nanoseconds, but
nothing we configure needs less than a millisecond). It serialises to a canonical string:
the largest unit that expresses it exactly, so ``"250ms"``, ``"5s"``, ``"1m"`` and ``"1h"``
come back unchanged, ``"90s"`` stays ``"90s"``, ``"1m30s"`` becomes ``"90s"``, ``"60s"``
becomes ``"1m"`` and ``"1.5s"`` becomes ``"1500ms"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import AfterValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from xds_server.model.errors import invalid

_UNITS: Final = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
#: Canonical units, largest first.
_CANONICAL: Final = (("h", 3_600_000), ("m", 60_000), ("s", 1_000))
_PART = re.compile(r"(\d+)(?:\.(\d+))?(ms|h|m|s)")
PATTERN: Final = r"^(\d+(\.\d+)?(ms|h|m|s))+$"
#: Envoy's (protobuf's) largest duration: 10,000 years.
MAX_MILLISECONDS: Final = 315_576_000_000 * 1_000
_HELP: Final = "a duration is a string like '250ms', '5s', '1m', '1h' or '1m30s'"


@dataclass(frozen=True, order=True, slots=True)
class Duration:
    """A non-negative, whole number of milliseconds."""

    milliseconds: int

    @staticmethod
    def parse(text: str) -> Duration:
        """Parse ``text``; raise ``ValueError`` with an operator-readable reason."""
        position = 0
        total = 0
        if not text:
            raise ValueError(f"empty duration: {_HELP}")
        for part in _PART.finditer(text):
            if part.start() != position:
                break
            whole, fraction, unit = part.groups()
            scale = _UNITS[unit]
            amount = int(whole) * scale
            if fraction:
                exact, remainder = divmod(int(fraction) * scale, 10 ** len(fraction))
                if remainder:
                    raise ValueError(f"{text!r} is not a whole number of milliseconds")
                amount += exact
            total += amount
            position = part.end()
        if position != len(text):
            raise ValueError(f"{text!r} is not a valid duration: {_HELP}")
        if total > MAX_MILLISECONDS:
            raise ValueError(f"{text!r} is longer than Envoy allows (10,000 years)")
        return Duration(total)

    @staticmethod
    def of(*, hours: int = 0, minutes: int = 0, seconds: int = 0, ms: int = 0) -> Duration:
        return Duration(((hours * 60 + minutes) * 60 + seconds) * 1_000 + ms)

    @property
    def seconds_and_nanos(self) -> tuple[int, int]:
        """The value as protobuf's ``Duration(seconds, nanos)`` wants it."""
        seconds, ms = divmod(self.milliseconds, 1_000)
        return seconds, ms * 1_000_000

    def __str__(self) -> str:
        if self.milliseconds == 0:
            return "0s"
        for unit, scale in _CANONICAL:
            if self.milliseconds % scale == 0:
                return f"{self.milliseconds // scale}{unit}"
        return f"{self.milliseconds}ms"

    def __repr__(self) -> str:
        return f"Duration({str(self)!r})"

    def __mul__(self, factor: int) -> Duration:
        return Duration(self.milliseconds * factor)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": PATTERN, "examples": ["250ms", "5s", "1m"]}


def _validate(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    if not isinstance(value, str):
        raise invalid("duration", _HELP)
    try:
        return Duration.parse(value)
    except ValueError as error:
        raise invalid("duration", str(error)) from None


def _positive(value: Duration) -> Duration:
    if value.milliseconds <= 0:
        raise invalid("duration", "must be longer than 0s")
    return value


#: A duration that Envoy requires to be greater than zero (intervals, connect timeouts).
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
