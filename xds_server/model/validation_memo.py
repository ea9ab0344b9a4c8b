"""Per-route validation, memoised by the identity of each route and of what it reads.

A write changes one route or a few; ``ConfigParser`` (and ``Config.with_document``) hand over
an unchanged document as the very same ``Entry`` and an unchanged kind as the very same
mapping. The per-route checks read one route at a time plus the other kinds' documents and
the inventory, never another route: so a route's problems are those found last time when
its entry is the same object and every other kind's mapping, and the inventory, are the
very same objects as on the last call. When any of those changed, every route is checked
again. Routes not found are checked together, in one pass of the checks over a config
holding only them, and their problems told apart by the route they name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType

from xds_server.model.config import Config, Entry
from xds_server.model.document import Kind
from xds_server.model.inventory import Inventory
from xds_server.model.problems import Problem
from xds_server.model.route import RouteSpec

#: A check over ``config.routes``, one route at a time: every problem it yields is about
#: (kind ``Route``, named by) the route it was found on.
RouteCheck = Callable[[Config, Inventory], Iterable[Problem]]

#: Every field of ``Config`` but ``routes``: what a route's checks may read besides it.
_CONTEXT_FIELDS = tuple(f.name for f in fields(Config) if f.name != "routes")


@dataclass(frozen=True, slots=True)
class _Found:
    entry: Entry[RouteSpec]
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]


@dataclass(frozen=True, slots=True)
class _Memo:
    context: tuple[object, ...]
    found: Mapping[str, _Found]


def _context(config: Config, inventory: Inventory) -> tuple[object, ...]:
    return (*(getattr(config, name) for name in _CONTEXT_FIELDS), inventory)


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _by_route(
    problems: Iterable[Problem], routes: Mapping[str, object]
) -> dict[str, list[Problem]]:
    found: dict[str, list[Problem]] = {}
    for problem in problems:
        if problem.kind != Kind.ROUTE.value or problem.name not in routes:
            raise AssertionError(f"a per-route check found a problem elsewhere: {problem}")
        found.setdefault(problem.name, []).append(problem)
    return found


class RouteChecks:
    """Runs ``errors`` and ``warnings`` (per-route checks) on the routes that changed only.

    The memo is replaced, never changed in place, so calls from several threads each work
    from one consistent memo (at worst one of them does its work again).
    """

    def __init__(self, errors: RouteCheck, warnings: RouteCheck) -> None:
        self._errors = errors
        self._warnings = warnings
        self._memo: _Memo | None = None

    def __call__(self, config: Config, inventory: Inventory) -> tuple[list[Problem], list[Problem]]:
        """The errors and the warnings of every route of ``config``."""
        memo = self._memo
        context = _context(config, inventory)
        known = memo.found if memo is not None and _same(memo.context, context) else {}
        found: dict[str, _Found] = {}
        missed: dict[str, Entry[RouteSpec]] = {}
        for name, entry in config.routes.items():
            hit = known.get(name)
            if hit is not None and hit.entry is entry:
                found[name] = hit
            else:
                missed[name] = entry
        if missed:
            only = replace(config, routes=MappingProxyType(missed))
            errors = _by_route(self._errors(only, inventory), missed)
            warnings = _by_route(self._warnings(only, inventory), missed)
            for name, entry in missed.items():
                found[name] = _Found(
                    entry, tuple(errors.get(name, ())), tuple(warnings.get(name, ()))
                )
        self._memo = _Memo(context, MappingProxyType(found))
        return (
            [problem for each in found.values() for problem in each.errors],
            [problem for each in found.values() for problem in each.warnings],
        )

    def clear(self) -> None:
        self._memo = None
