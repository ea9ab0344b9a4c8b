"""Consul's JSON → our model. Pure functions: no I/O, no clock, deterministic output.

Input is the documented shape of ``GET /v1/health/service/:service`` (a list of
``{"Node": …, "Service": …, "Checks": […]}`` entries) and of ``GET /v1/catalog/services``
(name → tags). The rules (DESIGN.md, "Consul, and the test double"):

- one endpoint per instance; address ``Service.Address``, else ``Node.Address``; optionally a
  tagged address (``wan``…) first: ``Service.TaggedAddresses[t]`` (address and port), then
  ``Node.TaggedAddresses[t]`` (address only);
- health is the worst of every check of the entry, node checks (``serfHealth``) included:
  passing → HEALTHY, warning → DEGRADED, critical, maintenance or anything unknown → UNHEALTHY;
  no checks → HEALTHY;
- weight ``Weights.Passing`` when passing, ``Weights.Warning`` when warning (default 1,
  clamped to at least 1 because Envoy rejects 0);
- locality zone = datacenter; priority 0 for the local datacenter, 1 for the others;
- filter metadata under ``consul``: ``tags``, ``meta``, ``node``, ``instance_id``,
  ``datacenter``.

Consul data is not trusted to be well-formed: missing or null fields fall back to defaults,
and an instance without a usable address or port is left out (Envoy would reject it).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xds_server.model.inventory import Endpoint, Health, Service

#: The filter-metadata namespace of Consul-discovered endpoints.
CONSUL_METADATA_NAMESPACE = "consul"

#: Services never served: Consul's own servers.
SKIPPED_SERVICES = frozenset({"consul"})

_MAINTENANCE_PREFIXES = ("_node_maintenance", "_service_maintenance:")
_RANK = {Health.HEALTHY: 0, Health.DEGRADED: 1, Health.UNHEALTHY: 2}


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """How one datacenter's entries become endpoints."""

    #: Tagged address to prefer (``"wan"``, ``"lan_ipv4"``…); None: the default address.
    prefer_tagged_address: str | None = None
    #: 0 for the local datacenter, 1 for the others.
    priority: int = 0
    #: Zone when an entry does not name its datacenter (``Node.Datacenter``).
    datacenter: str = ""


@dataclass(frozen=True, slots=True)
class ServiceFilter:
    """Which services to serve: name globs (``fnmatch``) and tags.

    A service is kept when its name matches an ``include`` pattern (or there are none), no
    ``exclude`` pattern, it carries one of ``include_tags`` (or there are none) and none of
    ``exclude_tags``. Tags are those of ``/v1/catalog/services``: the union over instances.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()

    def accepts(self, name: str, tags: Iterable[str] = ()) -> bool:
        if name in SKIPPED_SERVICES:
            return False
        if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        if any(fnmatch.fnmatchcase(name, p) for p in self.exclude):
            return False
        tag_set = set(tags)
        if self.include_tags and tag_set.isdisjoint(self.include_tags):
            return False
        return tag_set.isdisjoint(self.exclude_tags)


def select_services(
    catalog: Mapping[str, Sequence[str] | None], service_filter: ServiceFilter
) -> dict[str, tuple[str, ...]]:
    """``/v1/catalog/services`` → the selected names and their tags."""
    selected = {}
    for name, tags in catalog.items():
        tag_tuple = tuple(t for t in (tags or ()) if isinstance(t, str))
        if isinstance(name, str) and service_filter.accepts(name, tag_tuple):
            selected[name] = tag_tuple
    return selected


def check_health(checks: Iterable[Mapping[str, Any]] | None) -> Health:
    """The worst status among ``checks``; maintenance checks are always UNHEALTHY."""
    worst = Health.HEALTHY
    for check in checks or ():
        health = _one_check(check)
        if _RANK[health] > _RANK[worst]:
            worst = health
    return worst


def _one_check(check: Mapping[str, Any]) -> Health:
    check_id = str(check.get("CheckID") or "")
    if check_id.startswith(_MAINTENANCE_PREFIXES):
        return Health.UNHEALTHY
    status = check.get("Status")
    if status == "passing":
        return Health.HEALTHY
    if status == "warning":
        return Health.DEGRADED
    return Health.UNHEALTHY  # critical, maintenance, or something we do not know


def entry_to_endpoint(
    entry: Mapping[str, Any], options: MappingOptions = MappingOptions()
) -> Endpoint | None:
    """One ``/v1/health/service`` entry → an endpoint, or None without address or port."""
    node = _mapping(entry.get("Node"))
    service = _mapping(entry.get("Service"))
    checks = [c for c in (entry.get("Checks") or ()) if isinstance(c, Mapping)]

    address, port = _address(node, service, options.prefer_tagged_address)
    if not address or not 0 < port <= 65535:
        return None

    health = check_health(checks)
    weights = _mapping(service.get("Weights"))
    if health is Health.HEALTHY:
        weight = _weight(weights.get("Passing"))
    elif health is Health.DEGRADED:
        weight = _weight(weights.get("Warning"))
    else:
        weight = 1  # Envoy ignores the weight of unhealthy hosts; keep it valid

    datacenter = _str(node.get("Datacenter")) or options.datacenter
    tags = [t for t in (service.get("Tags") or ()) if isinstance(t, str)]
    meta = {str(k): v for k, v in _mapping(service.get("Meta")).items()}
    metadata = {
        CONSUL_METADATA_NAMESPACE: {
            "tags": tags,
            "meta": meta,
            "node": _str(node.get("Node")),
            "instance_id": _str(service.get("ID")),
            "datacenter": datacenter,
        }
    }
    return Endpoint(
        address=address,
        port=port,
        weight=weight,
        health=health,
        zone=datacenter,
        priority=options.priority,
        metadata=metadata,
    )


def endpoints_from_health(
    entries: Iterable[Mapping[str, Any]] | None, options: MappingOptions = MappingOptions()
) -> tuple[Endpoint, ...]:
    """Every usable instance in ``entries``, sorted."""
    endpoints = [
        e
        for e in (entry_to_endpoint(x, options) for x in entries or () if isinstance(x, Mapping))
        if e is not None
    ]
    return sort_endpoints(endpoints)


def service_from_health(
    name: str,
    entries: Iterable[Mapping[str, Any]] | None,
    options: MappingOptions = MappingOptions(),
) -> Service:
    """A whole ``/v1/health/service/<name>`` response → ``Service``."""
    return Service(name, endpoints_from_health(entries, options))


def merge_datacenters(name: str, per_datacenter: Iterable[Iterable[Endpoint]]) -> Service:
    """One service from the endpoints found in each datacenter (priorities already set)."""
    return Service(name, sort_endpoints(e for group in per_datacenter for e in group))


def sort_endpoints(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """A total, deterministic order, so equal data gives equal ``Service`` values."""
    return tuple(sorted(endpoints, key=_sort_key))


def _sort_key(e: Endpoint) -> tuple[int, str, str, str, int, str, str]:
    consul = _mapping(e.metadata.get(CONSUL_METADATA_NAMESPACE))
    return (
        e.priority,
        e.region,
        e.zone,
        e.address,
        e.port,
        _str(consul.get("node")),
        _str(consul.get("instance_id")),
    )


def _address(
    node: Mapping[str, Any], service: Mapping[str, Any], tagged: str | None
) -> tuple[str, int]:
    port = _int(service.get("Port"))
    if tagged:
        service_tagged = _mapping(_mapping(service.get("TaggedAddresses")).get(tagged))
        if address := _str(service_tagged.get("address")):
            return address, _int(service_tagged.get("port")) or port
        node_tagged = _mapping(node.get("TaggedAddresses")).get(tagged)
        if isinstance(node_tagged, str) and node_tagged:
            return node_tagged, port
    return _str(service.get("Address")) or _str(node.get("Address")), port


def _weight(value: Any) -> int:
    return max(_int(value, default=1), 1)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value
