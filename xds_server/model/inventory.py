"""What exists: services and their endpoints, as discovered by a registry source.

These are plain frozen dataclasses rather than pydantic models: an inventory of thousands of
services is rebuilt on every change, and it never crosses the API boundary unvalidated (the
sources build it from data they have already checked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Health(StrEnum):
    """Endpoint health as Envoy understands it (Consul: passing / warning / critical)."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service."""

    address: str
    port: int
    weight: int = 1
    health: Health = Health.HEALTHY
    zone: str = ""
    region: str = ""
    #: 0 for the local datacenter; higher values are failover targets.
    priority: int = 0
    #: Filter metadata for Envoy, keyed by namespace (e.g. ``{"consul": {"tags": [...]}}``).
    #: JSON-compatible values only.
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True, slots=True)
class Service:
    """A named service and its instances, sorted so equal services compare equal."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    #: The service's mesh sidecars: where other sidecars reach it over mutual TLS (each
    #: sidecar's address and public port, with the health of the instance it fronts).
    #: Consul: its ``connect-proxy`` registrations; static registry: ``sidecar_port``.
    mesh_endpoints: tuple[Endpoint, ...] = ()


_EMPTY: Mapping[str, Service] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Inventory:
    """An immutable view of every service known to a source.

    ``synced`` is false until the source has completed its first full read, so readiness
    can be reported honestly and an empty inventory is never mistaken for "no services".
    """

    services: Mapping[str, Service] = field(default_factory=lambda: _EMPTY)
    synced: bool = True

    def get(self, name: str) -> Service | None:
        return self.services.get(name)

    def with_service(self, service: Service) -> Inventory:
        """A copy with one service replaced (or added)."""
        services = dict(self.services)
        services[service.name] = service
        return Inventory(MappingProxyType(services), self.synced)

    def without_service(self, name: str) -> Inventory:
        services = dict(self.services)
        services.pop(name, None)
        return Inventory(MappingProxyType(services), self.synced)

    @staticmethod
    def of(services: Mapping[str, Service], synced: bool = True) -> Inventory:
        return Inventory(MappingProxyType(dict(services)), synced)
