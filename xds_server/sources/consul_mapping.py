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
- locality (what zone-aware routing reads): region = ``Service.Locality.Region`` (Consul
  1.17+) when set, else the datacenter; zone = ``Service.Locality.Zone`` when set, else
  ``Service.Meta["zone"]``, else ``Node.Meta["zone"]``, else none; priority 0 for the local
  datacenter, 1 for the others;
- filter metadata under ``consul``: ``tags``, ``meta`` (``Service.Meta``), ``node_meta``
  (``Node.Meta``), ``node``, ``instance_id``, ``datacenter`` (subsets filter on the first
  three);
- mesh (Connect): an instance whose ``Service.Kind`` is a proxy or gateway kind
  (``PROXY_KINDS``) is never an endpoint. A ``connect-proxy`` instance is a mesh endpoint of
  its ``Service.Proxy.DestinationServiceName`` (same address, port, health and weight rules:
  its health is the worst of the proxy's checks, which include the alias check of the
  instance it fronts), and a ``Service.Connect.Native`` instance a mesh endpoint of its own
  service — what ``/v1/health/connect/:service`` lists.

Consul data is not trusted to be well-formed: missing or null fields fall back to defaults,
and an instance without a usable address or port is left out (Envoy would reject it).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xds_server.model.inventory import Endpoint, Health, Service

#: The filter-metadata namespace of Consul-discovered endpoints.
CONSUL_METADATA_NAMESPACE = "consul"

#: Services never served: Consul's own servers.
SKIPPED_SERVICES = frozenset({"consul"})

#: ``Kind`` values of proxies and gateways (agent/service.mdx): never services of their own.
CONNECT_PROXY = "connect-proxy"
PROXY_KINDS = frozenset({CONNECT_PROXY, "mesh-gateway", "ingress-gateway", "terminating-gateway"})

_MAINTENANCE_PREFIXES = ("_node_maintenance", "_service_maintenance:")
_RANK = {Health.HEALTHY: 0, Health.DEGRADED: 1, Health.UNHEALTHY: 2}


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """How one datacenter's entries become endpoints."""

    #: Tagged address to prefer (``"wan"``, ``"lan_ipv4"``…); None: the default address.
    prefer_tagged_address: str | None = None
    #: 0 for the local datacenter, 1 for the others.
    priority: int = 0
    #: Datacenter (and region) when an entry does not name its own (``Node.Datacenter``).
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
    locality = _mapping(service.get("Locality"))
    tags = [t for t in (service.get("Tags") or ()) if isinstance(t, str)]
    meta = {str(k): v for k, v in _mapping(service.get("Meta")).items()}
    metadata = {
        CONSUL_METADATA_NAMESPACE: {
            "tags": tags,
            "meta": meta,
            "node_meta": {str(k): v for k, v in _mapping(node.get("Meta")).items()},
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
        region=_str(locality.get("Region")) or datacenter,
        zone=_zone(locality, meta, _mapping(node.get("Meta"))),
        priority=options.priority,
        metadata=metadata,
    )


def endpoints_from_health(
    entries: Iterable[Mapping[str, Any]] | None, options: MappingOptions = MappingOptions()
) -> tuple[Endpoint, ...]:
    """Every usable application instance in ``entries`` (no proxies or gateways), sorted."""
    return split_health(entries, options).endpoints


@dataclass(frozen=True, slots=True)
class HealthRead:
    """One ``/v1/health/service/<name>`` response, split by what its instances are."""

    #: The application instances (proxies and gateways left out).
    endpoints: tuple[Endpoint, ...] = ()
    #: Mesh endpoints found in the response, by the service they front (sorted tuples).
    mesh: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    #: True when there were instances and every one was a proxy or gateway: the name is not
    #: a service. None when the response was empty (nothing to say either way).
    proxy_only: bool | None = None


def service_kind(entry: Mapping[str, Any]) -> str:
    """``Service.Kind`` of a health entry ("" for a typical service)."""
    return _str(_mapping(entry.get("Service")).get("Kind"))


def mesh_destination(entry: Mapping[str, Any]) -> str:
    """The service a health entry is a mesh endpoint of, or "" when it is none.

    A ``connect-proxy`` names it in ``Proxy.DestinationServiceName``; a Connect-native
    instance is a mesh endpoint of its own service.
    """
    service = _mapping(entry.get("Service"))
    kind = _str(service.get("Kind"))
    if kind == CONNECT_PROXY:
        return _str(_mapping(service.get("Proxy")).get("DestinationServiceName"))
    if not kind and _mapping(service.get("Connect")).get("Native") is True:
        return _str(service.get("Service"))
    return ""


def split_health(
    entries: Iterable[Mapping[str, Any]] | None, options: MappingOptions = MappingOptions()
) -> HealthRead:
    """Application endpoints and mesh endpoints (by destination) of one health response."""
    apps: list[Endpoint] = []
    mesh: dict[str, list[Endpoint]] = {}
    kinds: list[str] = []
    for entry in entries or ():
        if not isinstance(entry, Mapping):
            continue
        kind = service_kind(entry)
        kinds.append(kind)
        endpoint = entry_to_endpoint(entry, options)
        if endpoint is None:
            continue
        if destination := mesh_destination(entry):
            mesh.setdefault(destination, []).append(endpoint)
        if kind not in PROXY_KINDS:
            apps.append(endpoint)
    proxy_only = all(k in PROXY_KINDS for k in kinds) if kinds else None
    return HealthRead(
        sort_endpoints(apps), {d: sort_endpoints(e) for d, e in mesh.items()}, proxy_only
    )


def service_from_health(
    name: str,
    entries: Iterable[Mapping[str, Any]] | None,
    options: MappingOptions = MappingOptions(),
    connect_entries: Iterable[Mapping[str, Any]] | None = None,
) -> Service:
    """A whole ``/v1/health/service/<name>`` response → ``Service``; its mesh endpoints from
    a ``/v1/health/connect/<name>`` response when one is given."""
    mesh = split_health(connect_entries, options).mesh.get(name, ())
    return Service(name, split_health(entries, options).endpoints, mesh)


def merge_datacenters(
    name: str,
    per_datacenter: Iterable[Iterable[Endpoint]],
    mesh: Iterable[Endpoint] = (),
) -> Service:
    """One service from the endpoints found in each datacenter (priorities already set)."""
    return Service(
        name, sort_endpoints(e for group in per_datacenter for e in group), sort_endpoints(mesh)
    )


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


#: The metadata key naming an instance's zone, in ``Service.Meta`` or ``Node.Meta``, for
#: Consul before 1.17 (no ``Locality``) or instances registered without one.
ZONE_META_KEY = "zone"


def _zone(
    locality: Mapping[str, Any], service_meta: Mapping[str, Any], node_meta: Mapping[str, Any]
) -> str:
    return (
        _str(locality.get("Zone"))
        or _str(service_meta.get(ZONE_META_KEY))
        or _str(node_meta.get(ZONE_META_KEY))
    )


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
