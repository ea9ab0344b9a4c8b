"""Parsing helpers shared by the double's endpoints: request bodies, query flags, durations.

Consul decodes JSON bodies with Go's `encoding/json` (field names match case-insensitively) and,
for agent and catalog registrations, also accepts snake_case keys (`lib.TranslateKeys`). py-consul
relies on that: it sends `{"node": ..., "serviceid": ...}` and `{"tagged_addresses": ...}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ConsulError",
    "as_dict",
    "as_str_map",
    "field",
    "parse_bool",
    "parse_go_duration",
    "query_flag",
]


class ConsulError(Exception):
    """An error answered as Consul does: a status code and a plain-text body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


def field(obj: Mapping[str, Any] | None, name: str, default: Any = None) -> Any:
    """Look a struct field up the way Consul's decoder does (case- and snake_case-insensitive)."""
    if not obj:
        return default
    if name in obj:
        return obj[name]
    want = _norm(name)
    for key, value in obj.items():
        if _norm(key) == want:
            return value
    return default


def as_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConsulError(400, f"Request decode failed: {what}: expected an object")
    return value


def as_str_map(value: Any, what: str) -> dict[str, str] | None:
    """A `map[string]string` field: None stays None (Go's nil map renders as null)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConsulError(400, f"Request decode failed: {what}: expected map of strings")
    return {str(k): v for k, v in value.items()}


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(text)


def query_flag(query: Mapping[str, str], name: str) -> bool:
    """Consul's getBoolQueryParam: present without value means true, else ParseBool."""
    if name not in query:
        return False
    value = query[name]
    return True if value == "" else parse_bool(value)


_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go `time.ParseDuration` string ("100ms", "10s", "5m", "1m30s") into seconds."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total
