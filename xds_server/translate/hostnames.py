"""Which routes a virtual host gets, Gateway API style.

A listener gets one virtual host per distinct hostname of its routes (Envoy rejects a
domain in two virtual hosts). Envoy picks the most specific virtual host for a request
(exact, then the longest ``*.suffix``, then ``*``), so each virtual host also carries the
rules of routes whose hostname *covers* it: ``*`` covers everything, ``*.example.com``
covers ``a.example.com`` and ``*.b.example.com``. Otherwise a request for
``a.example.com`` would never reach a rule of a ``*`` route once any route names
``a.example.com``.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=16384)
def covering(host: str) -> tuple[str, ...]:
    """Every route hostname that covers ``host``, most specific first: ``host`` itself, then
    the ``*.suffix`` wildcards from the longest suffix down, then ``*``. (Cached: every
    translation asks it for every virtual host.)"""
    if host == "*":
        return ("*",)
    labels = host.split(".")
    wildcards = ("*." + ".".join(labels[index:]) for index in range(1, len(labels)))
    return (host, *wildcards, "*")


def covers(route_hostname: str, host: str) -> bool:
    """Whether a route listing ``route_hostname`` answers requests for virtual host ``host``."""
    if route_hostname in ("*", host):
        return True
    if route_hostname.startswith("*."):
        return host.endswith(route_hostname[1:])
    return False


def specificity(route_hostname: str) -> tuple[int, int]:
    """Gateway API: characters in a matching non-wildcard hostname, then in the hostname."""
    exact = 0 if route_hostname.startswith("*") else len(route_hostname)
    return exact, len(route_hostname)
