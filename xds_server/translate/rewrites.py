"""Gateway API's "replace the matched prefix" on Envoy's ``prefix_rewrite``/``regex_rewrite``.

Envoy's ``prefix_rewrite`` swaps characters, so replacing ``/api`` with ``/`` would turn
``/api/x`` into ``//x``, and replacing ``/`` with ``/v2`` would turn ``/x`` into ``/v2x``.
Those two cases use an anchored ``regex_rewrite`` instead, giving ``/x`` and ``/v2/x``.
"""

from __future__ import annotations

from typing import Any

from envoy.type.matcher.v3 import regex_pb2

from xds_server.translate.precedence import canonical_prefix

_META = frozenset("\\.+*?()|[]{}^$")


def re2_literal(text: str) -> str:
    """``text`` as an RE2 pattern matching itself."""
    return "".join("\\" + char if char in _META else char for char in text)


def apply_prefix_rewrite(action: Any, matched_prefix: str, replacement: str) -> None:
    """Set ``prefix_rewrite`` or ``regex_rewrite`` on a ``RouteAction`` or ``RedirectAction``."""
    matched = canonical_prefix(matched_prefix)
    target = canonical_prefix(replacement)
    if matched == "/":
        if target != "/":
            action.regex_rewrite.pattern.CopyFrom(regex_pb2.RegexMatcher(regex="^/"))
            action.regex_rewrite.substitution = target + "/"
    elif target == "/":
        action.regex_rewrite.pattern.CopyFrom(
            regex_pb2.RegexMatcher(regex="^" + re2_literal(matched) + "/*")
        )
        action.regex_rewrite.substitution = "/"
    else:
        action.prefix_rewrite = target


def apply_full_path_rewrite(action: Any, path: str) -> None:
    """Replace the whole path (Envoy keeps the query string)."""
    action.regex_rewrite.pattern.CopyFrom(regex_pb2.RegexMatcher(regex="^/.*$"))
    action.regex_rewrite.substitution = path
