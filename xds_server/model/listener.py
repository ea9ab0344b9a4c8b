"""``Listener``: an address and port on which a proxy group accepts HTTP traffic (or TCP
connections, or TLS passed through by SNI)."""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, Field, field_validator, model_validator

from xds_server.model.addresses import is_ip_literal
from xds_server.model.base import StrictModel
from xds_server.model.duration import Duration
from xds_server.model.errors import invalid
from xds_server.model.names import GroupName, Name
from xds_server.model.telemetry import Metrics, Telemetry
from xds_server.model.upgrade import Upgrades

MAX_UINT32: Final = 2**32 - 1


class ListenerProtocol(StrEnum):
    """What a listener speaks: ``https`` needs a ``tls_policy`` with a ``downstream`` part;
    ``tcp`` forwards connections (a ``TcpRoute``), ``tls`` passes TLS through by SNI (its
    ``TlsRoute``s) without terminating it."""

    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"
    TLS = "tls"

    @property
    def is_stream(self) -> bool:
        """Whether the listener forwards connections (``tcp``/``tls``), not HTTP requests."""
        return self in (ListenerProtocol.TCP, ListenerProtocol.TLS)


def _check_ip(value: str) -> str:
    """Envoy binds listeners to IP literals only; keep the canonical text of the address."""
    if not is_ip_literal(value):
        raise invalid(
            "ip_address", f"{value!r} is not an IPv4 or IPv6 address (hostnames are not allowed)"
        )
    return str(ipaddress.ip_address(value))


IpAddress = Annotated[str, AfterValidator(_check_ip)]


class HttpOptions(StrictModel):
    """Options of Envoy's HTTP connection manager."""

    #: Close a downstream connection after it has had no active stream for this long.
    idle_timeout: Duration | None = None
    max_request_headers_kb: int | None = Field(default=None, ge=1, le=8192)
    #: Use the client's address (not X-Forwarded-For) as the remote address.
    use_remote_address: bool = False
    xff_num_trusted_hops: int = Field(default=0, ge=0, le=MAX_UINT32)
    #: Upgrades (WebSocket) every route on the listener lets through; a route rule can
    #: also allow one for its own requests only.
    upgrades: Upgrades = ()


class ListenerSpec(StrictModel):
    address: IpAddress = "0.0.0.0"
    port: int = Field(ge=1, le=65535)
    protocol: ListenerProtocol = ListenerProtocol.HTTP
    #: The proxy groups that get this listener; empty means every group.
    groups: tuple[GroupName, ...] = ()
    #: A JSON access log line per request on Envoy's stdout.
    access_log: bool = True
    http: HttpOptions = HttpOptions()
    #: ``https`` only: the ``TlsPolicy`` whose ``downstream`` part says how to speak TLS.
    tls_policy: Name | None = None
    #: ``http`` only: answer every request with a permanent redirect to ``https://`` (same
    #: host and path); routes attached to the listener are not used.
    https_redirect: bool = False
    #: The port in the redirect's location (default: none, i.e. 443).
    https_redirect_port: int | None = Field(default=None, ge=1, le=65535)
    #: Request tracing and request ids.
    telemetry: Telemetry = Telemetry()
    #: Serve Envoy's Prometheus metrics (and nothing else): routes attached are not used.
    metrics: Metrics | None = None

    @model_validator(mode="after")
    def _stream(self) -> ListenerSpec:
        """A ``tcp``/``tls`` listener has no HTTP: options of HTTP listeners are refused
        rather than ignored (``access_log`` and ``groups`` apply to every protocol)."""
        if not self.protocol.is_stream:
            return self
        http_only = [
            name
            for name, is_set in (
                ("http", self.http != HttpOptions()),
                ("tls_policy", self.tls_policy is not None),
                ("https_redirect", self.https_redirect or self.https_redirect_port is not None),
                ("telemetry", self.telemetry != Telemetry()),
                ("metrics", self.metrics is not None),
            )
            if is_set
        ]
        if http_only:
            raise invalid(
                http_only[0],
                f"{', '.join(http_only)}: for http/https listeners only; a {self.protocol} "
                + (
                    "listener forwards connections, not HTTP requests"
                    if self.protocol is ListenerProtocol.TCP
                    else "listener passes TLS through to its backends, which terminate it"
                ),
            )
        return self

    @model_validator(mode="after")
    def _tls(self) -> ListenerSpec:
        if self.protocol is ListenerProtocol.HTTPS and self.tls_policy is None:
            raise invalid("tls_policy", "protocol https needs tls_policy (a TlsPolicy's name)")
        if self.protocol is ListenerProtocol.HTTP and self.tls_policy is not None:
            raise invalid("tls_policy", "tls_policy applies to protocol https only")
        if self.https_redirect and self.protocol is ListenerProtocol.HTTPS:
            raise invalid("https_redirect", "https_redirect is for plain http listeners")
        if self.https_redirect_port is not None and not self.https_redirect:
            raise invalid("https_redirect", "https_redirect_port needs https_redirect: true")
        if self.metrics is not None and self.https_redirect:
            raise invalid("metrics", "a listener serves metrics or redirects to https, not both")
        return self

    @field_validator("groups")
    @classmethod
    def _unique_groups(cls, groups: tuple[str, ...]) -> tuple[str, ...]:
        duplicates = sorted({group for group in groups if groups.count(group) > 1})
        if duplicates:
            raise invalid("unique", f"groups are listed more than once: {', '.join(duplicates)}")
        return groups

    def delivered_to(self, group: str) -> bool:
        """Whether an Envoy of proxy group ``group`` gets this listener."""
        return not self.groups or group in self.groups
