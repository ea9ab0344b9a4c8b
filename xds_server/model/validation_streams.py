"""Cross-document checks of ``tcp``/``tls`` listeners and their ``TcpRoute``/``TlsRoute``s.

Errors: a stream route names a listener that is missing or of the wrong protocol; an HTTP
``Route`` (or a listener policy) is attached to a ``tcp``/``tls`` listener; a ``tcp``
listener has two ``TcpRoute``s (one ``tcp_proxy`` takes every connection); two ``TlsRoute``s
of one ``tls`` listener list the same server name (Envoy refuses a listener whose filter
chains match the same). Only identical entries conflict: ``*.example.com`` and
``a.example.com`` do not, Envoy picks the most specific.

A ``TlsRoute`` backend whose ``ServicePolicy`` has a ``tls_policy`` is an error too: its
cluster (one per service) would wrap the client's TLS in Envoy's own.

Warnings: a backend without instances (as for HTTP routes); a backend whose policy has an
(HTTP) health check; a stream listener with no route, which is not sent to Envoy at all (its
port stays closed).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from xds_server.model.config import Config, Entry
from xds_server.model.document import Kind
from xds_server.model.inventory import Inventory
from xds_server.model.listener import ListenerProtocol
from xds_server.model.problems import Problem
from xds_server.model.streams import StreamBackend


def _by_age(entries: Mapping[str, Entry[Any]]) -> list[Entry[Any]]:
    return sorted(entries.values(), key=lambda e: (e.created_revision, e.name))


def _listener_problems(
    config: Config, kind: Kind, entries: Mapping[str, Entry[Any]], wanted: ListenerProtocol
) -> Iterator[Problem]:
    for name, entry in entries.items():
        for index, listener in enumerate(entry.spec.listeners):
            where = f"spec.listeners[{index}]"
            found = config.listeners.get(listener)
            if found is None:
                yield Problem(kind.value, name, where, f"no listener {listener!r}")
            elif found.spec.protocol is not wanted:
                yield Problem(
                    kind.value,
                    name,
                    where,
                    f"listener {listener!r} has protocol {found.spec.protocol}; a {kind.value} "
                    f"attaches to {wanted} listeners only",
                )


def _http_on_streams(config: Config) -> Iterator[Problem]:
    """HTTP routes and listener policies have no effect on a stream listener: refused."""
    streams = {n: e.spec.protocol for n, e in config.listeners.items() if e.spec.protocol.is_stream}
    if not streams:
        return
    attached: tuple[tuple[Kind, Mapping[str, Entry[Any]]], ...] = (
        (Kind.ROUTE, config.routes),
        (Kind.AUTH_POLICY, config.auth_policies),
        (Kind.RATE_LIMIT_POLICY, config.rate_limit_policies),
    )
    for kind, entries in attached:
        for name, entry in entries.items():
            for index, listener in enumerate(entry.spec.listeners):
                if listener in streams:
                    route = "TcpRoute" if streams[listener] is ListenerProtocol.TCP else "TlsRoute"
                    yield Problem(
                        kind.value,
                        name,
                        f"spec.listeners[{index}]",
                        f"listener {listener!r} has protocol {streams[listener]} (no HTTP); "
                        f"use a {route}, or an http/https listener",
                    )


def _one_tcp_route_each(config: Config) -> Iterator[Problem]:
    owner: dict[str, str] = {}
    for entry in _by_age(config.tcp_routes):
        for index, listener in enumerate(entry.spec.listeners):
            if listener in owner:
                yield Problem(
                    Kind.TCP_ROUTE.value,
                    entry.name,
                    f"spec.listeners[{index}]",
                    f"listener {listener!r} already has TcpRoute {owner[listener]!r}; a tcp "
                    "listener takes one (split its traffic with backend weights)",
                )
            else:
                owner[listener] = entry.name


def _unique_server_names(config: Config) -> Iterator[Problem]:
    """The older route keeps a server name; the newer one listing it again is refused."""
    owner: dict[tuple[str, str], str] = {}
    for entry in _by_age(config.tls_routes):
        for listener in entry.spec.listeners:
            for index, hostname in enumerate(entry.spec.hostnames):
                first = owner.setdefault((listener, hostname), entry.name)
                if first != entry.name:
                    yield Problem(
                        Kind.TLS_ROUTE.value,
                        entry.name,
                        f"spec.hostnames[{index}]",
                        f"TlsRoute {first!r} already takes server name {hostname!r} on "
                        f"listener {listener!r}",
                    )


def _passthrough_not_reencrypted(config: Config) -> Iterator[Problem]:
    """A TlsRoute passes TLS through: a backend whose ServicePolicy makes Envoy speak TLS to
    it (a cluster is per service) would get the client's TLS wrapped in Envoy's."""
    for name, entry in config.tls_routes.items():
        for index, backend in enumerate(entry.spec.backends):
            policy = config.service_policy(backend.service)
            if policy is not None and policy.tls_policy is not None:
                yield Problem(
                    Kind.TLS_ROUTE.value,
                    name,
                    f"spec.backends[{index}].service",
                    f"ServicePolicy {backend.service!r} has tls_policy {policy.tls_policy!r}: "
                    "Envoy would wrap the client's TLS in its own; a passthrough backend "
                    "takes no upstream TLS",
                )


def stream_errors(config: Config) -> Iterator[Problem]:
    """Every cross-document error about stream listeners and routes."""
    yield from _listener_problems(config, Kind.TCP_ROUTE, config.tcp_routes, ListenerProtocol.TCP)
    yield from _listener_problems(config, Kind.TLS_ROUTE, config.tls_routes, ListenerProtocol.TLS)
    yield from _http_on_streams(config)
    yield from _one_tcp_route_each(config)
    yield from _unique_server_names(config)
    yield from _passthrough_not_reencrypted(config)


def _backends(config: Config) -> Iterator[tuple[Kind, str, int, StreamBackend]]:
    for kind, entries in ((Kind.TCP_ROUTE, config.tcp_routes), (Kind.TLS_ROUTE, config.tls_routes)):
        for name, entry in entries.items():
            for index, backend in enumerate(entry.spec.backends):
                yield kind, name, index, backend


def stream_warnings(config: Config, inventory: Inventory) -> Iterator[Problem]:
    """Backends without instances (once the inventory has synced) and unused listeners."""
    if inventory.synced:
        for kind, name, index, backend in _backends(config):
            found = inventory.get(backend.service)
            if found is None or not found.endpoints:
                yield Problem(
                    kind.value,
                    name,
                    f"spec.backends[{index}].service",
                    f"service {backend.service!r} has no instances yet; Envoy closes the "
                    "connections sent to it until one registers",
                )
    for kind, name, index, backend in _backends(config):
        policy = config.service_policy(backend.service)
        if policy is not None and policy.health_check is not None:
            yield Problem(
                kind.value,
                name,
                f"spec.backends[{index}].service",
                f"ServicePolicy {backend.service!r} has an HTTP health check: instances that "
                "do not answer it are unhealthy, and get no connections",
            )
    routed = {
        listener
        for entries in (config.tcp_routes, config.tls_routes)
        for entry in entries.values()
        for listener in entry.spec.listeners
    }
    for name, entry in config.listeners.items():
        protocol = entry.spec.protocol
        if protocol.is_stream and name not in routed:
            route = "TcpRoute" if protocol is ListenerProtocol.TCP else "TlsRoute"
            yield Problem(
                Kind.LISTENER.value,
                name,
                "spec.protocol",
                f"no {route} attaches to this {protocol} listener; Envoy gets it once one does",
            )
