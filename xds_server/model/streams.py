"""``TcpRoute`` and ``TlsRoute``: connections (not requests) to registry services.

Modelled on Gateway API's TCPRoute and TLSRoute. A ``TcpRoute`` sends every connection of
its ``tcp`` listeners to weighted backends; a ``TlsRoute`` chooses backends on a ``tls``
listener by the client's SNI (the server name of its TLS ClientHello) and passes the
encrypted bytes through: the backend terminates TLS with its own certificate.

Connect timeouts, load balancing and circuit breakers come from each backend service's
``ServicePolicy``, as for HTTP routes.

Backends are ``{service, weight}`` of their own (not ``route.Backend``): a stream backend
accepts exactly the fields its translation honours, so nothing is silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, Field, field_validator

from xds_server.model.base import NonEmpty, StrictModel
from xds_server.model.duration import Duration
from xds_server.model.errors import invalid
from xds_server.model.names import HostnameMatch, Name, ServiceName

MAX_WEIGHT: Final = 1_000_000
#: As for HTTP route rules: any real split fits, the weights' sum stays far below uint32.
MAX_BACKENDS: Final = 64


class StreamBackend(StrictModel):
    service: ServiceName
    #: Relative share of the connections; 0 keeps the service referenced but idle.
    weight: int = Field(default=1, ge=0, le=MAX_WEIGHT)


def _unique(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    duplicates = sorted({value for value in values if values.count(value) > 1})
    if duplicates:
        raise invalid("unique", f"{what} listed more than once: {', '.join(duplicates)}")
    return values


def _check_backends(backends: tuple[StreamBackend, ...]) -> tuple[StreamBackend, ...]:
    _unique(tuple(backend.service for backend in backends), "services are")
    if sum(backend.weight for backend in backends) == 0:
        raise invalid("backends", "the backends' weights must not all be 0")
    return backends


#: At least one backend, each service once, not every weight 0.
Backends = Annotated[
    NonEmpty[StreamBackend], AfterValidator(_check_backends), Field(max_length=MAX_BACKENDS)
]


def _not_any_host(value: str) -> str:
    if value == "*":
        raise invalid(
            "hostname",
            "'*' is not a server name: list exact names or '*.' wildcards (a client without a "
            "matching SNI is refused)",
        )
    return value


#: A server name a ``TlsRoute`` answers for: exact, or ``*.suffix`` (any name ending in
#: ``.suffix``, at any depth: Envoy's most specific match wins).
SniHostname = Annotated[HostnameMatch, AfterValidator(_not_any_host)]


class _StreamRouteFields(StrictModel):
    """What a ``TcpRoute`` and a ``TlsRoute`` have in common."""

    #: The listeners (``tcp`` for a ``TcpRoute``, ``tls`` for a ``TlsRoute``).
    listeners: NonEmpty[Name]
    backends: Backends
    #: Close a connection with no bytes in either direction for this long (Envoy's default:
    #: 1h; ``0s`` never).
    idle_timeout: Duration | None = None
    #: A JSON access log line per connection on Envoy's stdout (if the listener logs too).
    access_log: bool = True

    @field_validator("listeners")
    @classmethod
    def _unique_listeners(cls, listeners: tuple[str, ...]) -> tuple[str, ...]:
        return _unique(listeners, "listeners are")


class TcpRouteSpec(_StreamRouteFields):
    """Every connection of its ``tcp`` listeners, to weighted backends; each ``tcp``
    listener takes one ``TcpRoute``."""


class TlsRouteSpec(_StreamRouteFields):
    """Connections of its ``tls`` listeners whose server name (SNI) it lists, passed through
    to weighted backends without terminating TLS."""

    #: The server names (SNI) this route takes; another route of the same listener may not
    #: list the same entry (``*.example.com`` and ``a.example.com`` may coexist: the exact
    #: one wins for ``a.example.com``).
    hostnames: NonEmpty[SniHostname]

    @field_validator("hostnames")
    @classmethod
    def _unique_hostnames(cls, hostnames: tuple[str, ...]) -> tuple[str, ...]:
        return _unique(hostnames, "hostnames are")


#: Either kind of stream route.
StreamRouteSpec = TcpRouteSpec | TlsRouteSpec
