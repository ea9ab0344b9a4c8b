"""Duplicate matches: a later route rule that can never be chosen because an earlier one
(older route first, then rule order) matches the same requests on a listener and hostname.

The check is across every route, so it keeps an index from (listener, hostname, match
signature) to each place that has it, and updates it with the routes a new config changed
(found by identity: unchanged entries are the very same objects from one config to the
next) instead of rebuilding it. Only keys held by two places or more can warn, so the
warnings come from those alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from xds_server.model.config import Entry
from xds_server.model.document import Kind
from xds_server.model.identity import IdentityMemo
from xds_server.model.problems import Problem
from xds_server.model.route import Match, RouteSpec


def match_signature(match: Match) -> tuple[object, ...]:
    """What a match selects, independent of how it is written (order of headers, trailing /)."""
    path = match.route_path
    if path is None or path.prefix is not None:
        prefix = path.prefix if path is not None and path.prefix is not None else "/"
        path_key: tuple[str, str] = ("prefix", prefix.rstrip("/") or "/")
    elif path.exact is not None:
        path_key = ("exact", path.exact)
    else:
        path_key = ("regex", path.regex or "")
    headers = sorted(
        (h.name.lower(), repr((h.exact, h.prefix, h.regex, h.present)), h.invert)
        for h in match.headers
    )
    queries = sorted((q.name, repr((q.exact, q.regex, q.present))) for q in match.query_params)
    return (path_key, match.method, repr(headers), repr(queries))


MatchKey = tuple[int, int, tuple[object, ...]]


def _route_match_keys(spec: RouteSpec) -> tuple[MatchKey, ...]:
    """(rule index, match index, signature) of every match of a route, in order."""
    return tuple(
        (rule_index, match_index, match_signature(match))
        for rule_index, rule in enumerate(spec.rules)
        for match_index, match in enumerate(rule.matches)
    )


#: By ``RouteSpec`` object: a write re-computes the signatures of the routes it changed only.
_match_keys: IdentityMemo[RouteSpec, tuple[MatchKey, ...]] = IdentityMemo(_route_match_keys)

#: (listener, hostname, *signature): what two rules must share to shadow one another.
Key = tuple[object, ...]
#: (route's created revision, route, rule index, match index): one place that has a key,
#: ordered as precedence orders them (older route first, then by name, then rule order).
Place = tuple[int, str, int, int]


def _places(entry: Entry[RouteSpec]) -> Iterator[tuple[Key, Place]]:
    """Every (key, place) of a route, one per listener, hostname and match (repeats kept:
    each is a warning of its own)."""
    spec = entry.spec
    for rule_index, match_index, signature in _match_keys(spec):
        place = (entry.created_revision, entry.name, rule_index, match_index)
        for listener in spec.listeners:
            for hostname in spec.hostnames:
                yield (listener, hostname, *signature), place


class DuplicateMatches:
    """The duplicate-match warnings of a config's routes, from an index kept between calls.

    The warnings are those of a pass over the routes by age that remembers where each key
    was first seen (route and rule) and warns at every later place of another rule: the
    first place of a key is its smallest ``Place``. A lock guards the index (configs are
    checked in worker threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: Mapping[str, Entry[RouteSpec]] = MappingProxyType({})
        self._index: dict[Key, list[Place]] = {}
        self._shared: set[Key] = set()
        #: What each route of ``_routes`` put in the index (taken out as it was put in).
        self._placed: dict[str, list[tuple[Key, Place]]] = {}

    def __call__(self, routes: Mapping[str, Entry[RouteSpec]]) -> list[Problem]:
        with self._lock:
            self._update(routes)
            return list(self._warnings())

    def clear(self) -> None:
        with self._lock:
            self._routes = MappingProxyType({})
            self._index.clear()
            self._shared.clear()
            self._placed.clear()

    def _update(self, routes: Mapping[str, Entry[RouteSpec]]) -> None:
        previous = self._routes
        if routes is previous:
            return
        for name, entry in previous.items():
            if routes.get(name) is not entry:
                self._remove(name)
        for name, entry in routes.items():
            if previous.get(name) is not entry:
                self._add(name, entry)
        self._routes = routes

    def _add(self, name: str, entry: Entry[RouteSpec]) -> None:
        placed = self._placed[name] = list(_places(entry))
        for key, place in placed:
            places = self._index.setdefault(key, [])
            places.append(place)
            if len(places) > 1:
                self._shared.add(key)

    def _remove(self, name: str) -> None:
        for key, place in self._placed.pop(name):
            places = self._index[key]
            places.remove(place)
            if len(places) < 2:
                self._shared.discard(key)
            if not places:
                del self._index[key]

    def _warnings(self) -> Iterator[Problem]:
        for key in self._shared:
            places = self._index[key]
            first = min(places)
            seen = f"route {first[1]!r} rules[{first[2]}]"
            listener, hostname = key[0], key[1]
            for _, name, rule_index, match_index in places:
                if (name, rule_index) != (first[1], first[2]):
                    yield Problem(
                        Kind.ROUTE.value,
                        name,
                        f"spec.rules[{rule_index}].matches[{match_index}]",
                        f"{seen} already has this match for {hostname!r} on "
                        f"listener {listener!r}; this one is never used",
                    )
