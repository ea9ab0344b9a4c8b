"""Warnings for route rule features that mesh calls do not honour.

A ``Route`` attached to mesh ``upstreams`` applies its matches, backends, filters that
rewrite or redirect, timeouts and retries to every sidecar's calls to those services. The
rule features that need an HTTP filter on the listener — JWT ``auth``, ``rate_limit``,
``filters.cors``, ``fault`` and ``upgrades`` — are set up on edge listeners only: a sidecar's
outbound listener has no such filters, so on mesh calls these fields have no effect. Envoy
accepts the config either way, so this is a warning, not an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from xds_server.model.config import Config
from xds_server.model.document import Kind
from xds_server.model.problems import Problem
from xds_server.model.route import Rule

#: Rule fields (as the API spells them) that only edge listeners carry out.
_EDGE_ONLY: Final = ("auth", "rate_limit", "filters.cors", "fault", "upgrades")


def _set(rule: Rule, field: str) -> bool:
    value: object = rule
    for part in field.split("."):
        value = getattr(value, part)
    return bool(value)


def mesh_route_warnings(config: Config) -> Iterator[Problem]:
    for name, entry in config.routes.items():
        if not entry.spec.upstreams:
            continue
        where = (
            "on the route's edge listeners only"
            if entry.spec.listeners
            else "on edge listeners only, and this route has none"
        )
        for index, rule in enumerate(entry.spec.rules):
            for field in _EDGE_ONLY:
                if _set(rule, field):
                    yield Problem(
                        Kind.ROUTE.value,
                        name,
                        f"spec.rules[{index}].{field}",
                        f"{field} applies {where}: sidecars' calls to "
                        f"{', '.join(entry.spec.upstreams)} ignore it",
                    )
