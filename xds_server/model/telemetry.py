"""A listener's telemetry: request tracing to a collector, and Envoy's own metrics.

``Listener.telemetry.tracing`` sends a span per request to an OpenTelemetry collector (OTLP
over gRPC) or a Zipkin collector (JSON over HTTP). ``Listener.metrics`` turns a listener into
Envoy's Prometheus endpoint: it answers one path with Envoy's ``/stats/prometheus`` (read
through the admin interface, which stays on loopback) and nothing else.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, Field, model_validator

from xds_server.model.addresses import is_ip_literal
from xds_server.model.base import StrictModel
from xds_server.model.errors import invalid
from xds_server.model.http import HeaderValuePrefix, Path
from xds_server.model.names import HOSTNAME_PATTERN

_HOSTNAME: Final = re.compile(HOSTNAME_PATTERN)
HOST_PORT_PATTERN: Final = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"


def split_host_port(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> ``(host, port)``; ``ValueError`` if invalid."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{value!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host or not is_ip_literal(host):
            raise ValueError(f"{value!r}: {host!r} is not an IPv6 address")
    elif not is_ip_literal(host) and not (len(host) <= 253 and _HOSTNAME.fullmatch(host)):
        raise ValueError(f"{value!r}: {host!r} is neither an IP address nor a lowercase hostname")
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, as [::1]:4317")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: the port must be 1-65535")
    return host, port


def _check_host_port(value: str) -> str:
    try:
        split_host_port(value)
    except ValueError as error:
        raise invalid("host_port", str(error)) from None
    return value


#: ``host:port``: an IP address (IPv6 in brackets) or a DNS name, and a port.
HostPort = Annotated[
    str, AfterValidator(_check_host_port), Field(json_schema_extra={"pattern": HOST_PORT_PATTERN})
]


def _check_ip_port(value: str) -> str:
    host, _ = split_host_port(_check_host_port(value))
    if not is_ip_literal(host):
        raise invalid("ip_port", f"{value!r}: Envoy's admin address is an IP address and a port")
    return value


#: ``ip:port``.
IpPort = Annotated[
    str, AfterValidator(_check_ip_port), Field(json_schema_extra={"pattern": HOST_PORT_PATTERN})
]
TagName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]


class TracingProvider(StrEnum):
    OPENTELEMETRY = "opentelemetry"
    ZIPKIN = "zipkin"


class Tracing(StrictModel):
    """Where spans go and how many requests are traced.

    ``opentelemetry``: OTLP over gRPC to ``collector`` (e.g. ``otel-collector:4317``), with
    ``service_name`` as the resource's ``service.name``. ``zipkin``: JSON (v2) over HTTP POST
    to ``http://collector{path}``; Zipkin's service name is the Envoy's proxy group
    (``node.cluster``), so ``service_name`` is for OpenTelemetry only.
    """

    provider: TracingProvider = TracingProvider.OPENTELEMETRY
    collector: HostPort
    #: ``zipkin`` only: the collector's path.
    path: Path | None = None
    #: ``opentelemetry`` only (default: Envoy's, ``unknown_service:envoy``).
    service_name: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    #: The share of requests traced, in percent (a request carrying a sampled trace context
    #: is traced regardless).
    sampling: float = Field(default=100.0, ge=0.0, le=100.0)
    #: Literal tags added to every span.
    tags: dict[TagName, HeaderValuePrefix] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _provider_fields(self) -> Tracing:
        if self.provider is TracingProvider.ZIPKIN and self.service_name is not None:
            raise invalid(
                "service_name",
                "zipkin spans carry the proxy group (node.cluster) as their service name; "
                "service_name is for opentelemetry",
            )
        if self.provider is TracingProvider.OPENTELEMETRY and self.path is not None:
            raise invalid("path", "path is the zipkin collector's; OTLP/gRPC has no path")
        return self

    @property
    def zipkin_path(self) -> str:
        return self.path or "/api/v2/spans"

    def __hash__(self) -> int:
        return hash(
            (
                self.provider,
                self.collector,
                self.path,
                self.service_name,
                self.sampling,
                *sorted(self.tags.items()),
            )
        )


class Telemetry(StrictModel):
    tracing: Tracing | None = None
    #: Generate an ``x-request-id`` for requests without one (kept when present) and pass it
    #: to the services; tracing uses it too.
    request_id: bool = True


class Metrics(StrictModel):
    """The listener answers ``GET {path}`` with Envoy's Prometheus stats, and 404 otherwise."""

    path: Path = "/metrics"
    #: Envoy's admin address (the bootstrap's ``admin.address``; ``envoy/bootstrap.yaml`` has
    #: 127.0.0.1:9901). Only its ``/stats/prometheus`` is reachable through the listener.
    admin_address: IpPort = "127.0.0.1:9901"
