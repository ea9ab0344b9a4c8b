"""Gateway API precedence of route rules sharing a virtual host.

Envoy tries routes in order and takes the first match, so the order decides. Ordered by,
each criterion breaking ties of the ones before:

1. hostname: the route's matching hostname with the most non-wildcard characters, then the
   most characters (Gateway API's rule for routes with intersecting hostnames);
2. path: an exact path; then prefixes, longest first; then regexes; then the catch-all
   prefix ``/`` (also what a match without ``path`` means). Gateway API leaves regex
   precedence to the implementation: we put it after every real prefix, as a regex is
   usually a refinement inside some prefix's space, but before ``/``, which would
   otherwise shadow every regex rule;
3. a method match before none;
4. more header matches first;
5. more query parameter matches first;
6. the older route (lower ``created_revision``);
7. the route name, alphabetically;
8. rule order within the route, then match order within the rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from xds_server.model.route import Match

_EXACT, _PREFIX, _REGEX, _CATCH_ALL = range(4)


def canonical_prefix(prefix: str) -> str:
    """Gateway API ignores a prefix's trailing ``/``: ``/api/`` means ``/api``."""
    return prefix.rstrip("/") or "/"


def _path_rank(match: Match) -> tuple[int, int]:
    path = match.route_path
    if path is None:
        return _CATCH_ALL, 0
    if path.exact is not None:
        return _EXACT, 0
    if path.prefix is not None:
        prefix = canonical_prefix(path.prefix)
        return (_CATCH_ALL, 0) if prefix == "/" else (_PREFIX, -len(prefix))
    return _REGEX, 0


@dataclass(frozen=True, slots=True)
class Position:
    """Where one match of one rule of one route stands among a virtual host's routes."""

    hostname_specificity: tuple[int, int]
    created_revision: int
    route: str
    rule: int
    match: int


def sort_key(position: Position, match: Match) -> tuple[object, ...]:
    exact_chars, chars = position.hostname_specificity
    path_kind, path_length = _path_rank(match)
    return (
        -exact_chars,
        -chars,
        path_kind,
        path_length,
        0 if match.method is not None else 1,
        -len(match.headers),
        -len(match.query_params),
        position.created_revision,
        position.route,
        position.rule,
        position.match,
    )
