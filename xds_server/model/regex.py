"""Regular expressions checked with RE2, the engine Envoy compiles them with.

A pattern that Python's ``re`` accepts may still be rejected by Envoy (look-arounds,
back-references), so the check uses ``google-re2`` and quotes RE2's own error message.
"""

from __future__ import annotations

from typing import Annotated, Final

import re2
from pydantic import AfterValidator, Field

from xds_server.model.errors import invalid

#: Long enough for any sane route regex; keeps a single document from bloating every Envoy.
MAX_REGEX_LENGTH: Final = 1024


def re2_error(pattern: str) -> str | None:
    """RE2's error message for ``pattern``, or ``None`` when it compiles."""
    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as error:
        detail = error.args[0] if error.args else error
        return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    return None


def _check_regex(value: str) -> str:
    if not value:
        raise invalid("regex", "a regex must not be empty")
    if len(value) > MAX_REGEX_LENGTH:
        raise invalid("regex", f"a regex must be at most {MAX_REGEX_LENGTH} characters")
    error = re2_error(value)
    if error is not None:
        raise invalid("regex", f"invalid RE2 regex: {error}")
    return value


#: A regex in RE2 syntax (https://github.com/google/re2/wiki/Syntax).
Re2Regex = Annotated[
    str,
    AfterValidator(_check_regex),
    Field(json_schema_extra={"format": "re2-regex"}),
]
