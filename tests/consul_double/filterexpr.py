"""A minimal subset of Consul's `?filter=` expressions (go-bexpr).

Supported: clauses joined by `and`:
    Selector == "value"     Selector != "value"
    "value" in Selector     "value" not in Selector
    Selector is empty       Selector is not empty
Selectors are dotted paths into a result entry (`Service.Tags`, `Service.Meta.version`,
`Node.Node`, `Checks.Status`); through a list, `==`/`in` match if any element matches.
Anything else (`or`, `not`, parentheses, `matches`) is rejected with a 400 rather than
silently ignored, so a test never passes because a filter was dropped.

Each endpoint documents the selectors it accepts ("Filtering" in its api-docs page); an
endpoint that passes its table to `compile_filter` rejects any other selector with a 400, as
Consul does ("Selector ... is not valid"). So a client cannot come to rely on a field that a
real Consul would refuse to filter on (for checks, `ModifyIndex` is not filterable, and
bexpr has no `<`/`>` comparisons at all: features/filtering.mdx lists ==, !=, is empty,
in, contains, matches).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from .decode import ConsulError

__all__ = ["CHECK_SELECTORS", "compile_filter"]

#: The selectors of a health check, as health.mdx lists them for /v1/health/state/:state,
#: /v1/health/node/:node and /v1/health/checks/:service ("Filtering": "The filter will be
#: executed against each health check in the results list with the following selectors").
CHECK_SELECTORS = frozenset(
    {
        "CheckID",
        "Name",
        "Node",
        "Notes",
        "Output",
        "ServiceID",
        "ServiceName",
        "ServiceTags",
        "Status",
    }
)

_VALUE = r'"(?:[^"\\]|\\.)*"|`[^`]*`|[A-Za-z0-9_.:/-]+'
_SELECTOR = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*"
_CLAUSES = [
    (re.compile(rf"^({_SELECTOR})\s*(==|!=)\s*({_VALUE})$"), "cmp"),
    (re.compile(rf"^({_VALUE})\s+(not\s+in|in)\s+({_SELECTOR})$"), "in"),
    (re.compile(rf"^({_SELECTOR})\s+is\s+(not\s+)?empty$"), "empty"),
]

Predicate = Callable[[Any], bool]


def _unquote(text: str) -> str:
    if text.startswith('"'):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if text.startswith("`"):
        return text[1:-1]
    return text


def _resolve(obj: Any, path: list[str]) -> list[Any]:
    """Values at `path`; lists in the middle fan out (bexpr's "any element" semantics)."""
    if not path:
        return [obj]
    if isinstance(obj, list):
        return [v for item in obj for v in _resolve(item, path)]
    if isinstance(obj, dict) and path[0] in obj:
        return _resolve(obj[path[0]], path[1:])
    return []


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _contains(container: Any, needle: str) -> bool:
    if isinstance(container, list | dict):
        return any(_text(v) == needle for v in container)
    if isinstance(container, str):
        return needle in container
    return False


def _compare(path: list[str], op: str, want: str) -> Predicate:
    def cmp(entry: Any) -> bool:
        hit = any(_text(v) == want for v in _resolve(entry, path))
        return hit if op == "==" else not hit

    return cmp


def _member(needle: str, negate: bool, path: list[str]) -> Predicate:
    def member(entry: Any) -> bool:
        hit = any(_contains(v, needle) for v in _resolve(entry, path))
        return not hit if negate else hit

    return member


def _empty(path: list[str], negate: bool) -> Predicate:
    def empty(entry: Any) -> bool:
        values = _resolve(entry, path)
        is_empty = all(v is None or (hasattr(v, "__len__") and len(v) == 0) for v in values)
        return not is_empty if negate else is_empty

    return empty


def _check_selector(selector: str, selectors: Collection[str] | None) -> None:
    if selectors is not None and selector not in selectors:
        raise ConsulError(
            400,
            f'Failed to create boolean expression evaluator: Selector "{selector}" is not valid',
        )


def _clause(text: str, selectors: Collection[str] | None) -> Predicate:
    for pattern, kind in _CLAUSES:
        m = pattern.match(text)
        if m is None:
            continue
        _check_selector(m.group(3) if kind == "in" else m.group(1), selectors)
        if kind == "cmp":
            return _compare(m.group(1).split("."), m.group(2), _unquote(m.group(3)))
        if kind == "in":
            return _member(_unquote(m.group(1)), m.group(2) != "in", m.group(3).split("."))
        return _empty(m.group(1).split("."), m.group(2) is not None)
    raise ConsulError(
        400,
        "Failed to create boolean expression evaluator: "
        f"unsupported by the consul double: {text!r}",
    )


def compile_filter(expression: str, selectors: Collection[str] | None = None) -> Predicate:
    """The predicate of `expression`; with `selectors`, only those selectors are valid."""
    parts = [p.strip() for p in re.split(r"\s+and\s+", expression.strip()) if p.strip()]
    if not parts:
        raise ConsulError(400, "Failed to create boolean expression evaluator: empty filter")
    predicates = [_clause(p, selectors) for p in parts]
    return lambda entry: all(p(entry) for p in predicates)
