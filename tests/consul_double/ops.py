"""Catalog operations shared by the HTTP endpoints and the Python control API.

Both paths go through these functions (and `Core.write`), so a test that registers through
`ConsulDouble.register()` sees exactly the indexes a client registering over HTTP would.
Decoding of request bodies (Consul's field names, defaults and validation) lives here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .catalog import Catalog
from .decode import ConsulError, as_dict, as_str_map, field
from .model import HEALTH_STATES, Check, Service, default_weights

__all__ = [
    "NODE_MAINT_CHECK_ID",
    "SERVICE_MAINT_PREFIX",
    "decode_agent_check",
    "decode_agent_service",
    "decode_catalog_check",
    "decode_service",
    "decode_sidecar_service",
    "decode_tagged_addresses",
    "decode_weights",
    "set_node_maintenance",
    "set_service_maintenance",
    "validate_status",
]

SERVICE_MAINT_PREFIX = "_service_maintenance:"
#: `Kind` values a registration may carry (agent/service.mdx).
SERVICE_KINDS = frozenset(
    {"connect-proxy", "mesh-gateway", "ingress-gateway", "terminating-gateway"}
)
NODE_MAINT_CHECK_ID = "_node_maintenance"
_SERVICE_MAINT_DEFAULT = (
    "Maintenance mode is enabled for this service, but no reason was provided. "
    "This is a default message."
)
_NODE_MAINT_DEFAULT = (
    "Maintenance mode is enabled for this node, but no reason was provided. "
    "This is a default message."
)


def validate_status(status: Any) -> str:
    if status not in HEALTH_STATES:
        raise ConsulError(400, f"Invalid check status: {status!r}")
    return str(status)


def decode_tagged_addresses(raw: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tag, value in as_dict(raw, "TaggedAddresses").items():
        if not isinstance(value, dict):
            raise ConsulError(400, f"Request decode failed: TaggedAddresses.{tag}: expected object")
        out[str(tag)] = {
            "address": str(field(value, "Address", "") or ""),
            "port": int(field(value, "Port", 0) or 0),
        }
    return out


def decode_weights(raw: Any, strict: bool) -> dict[str, int]:
    """Weights default to {1, 1}; the agent rejects invalid ones, the catalog ignores them."""
    if raw is None:
        return default_weights()
    weights = as_dict(raw, "Weights")
    passing = int(field(weights, "Passing", 0) or 0)
    warning = int(field(weights, "Warning", 0) or 0)
    problem = None
    if passing < 1:
        problem = "Passing must be greater than 0"
    elif warning < 0:
        problem = "Warning must be greater or equal than 0"
    elif passing > 65535 or warning > 65535:
        problem = "DNS Weight must be between 0 and 65535"
    if problem is None:
        return {"Passing": passing, "Warning": warning}
    if strict:
        raise ConsulError(400, f"Invalid Weights: {problem}")
    return default_weights()


def _int_field(raw: Mapping[str, Any], name: str, what: str) -> int:
    value = field(raw, name, 0) or 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConsulError(400, f"Request decode failed: {what}.{name}: expected a number")
    return value


def decode_upstream(raw: Any, position: int) -> dict[str, Any]:
    """One `Proxy.Upstreams[]` entry, rendered as Consul does (empty fields omitted)."""
    what = f"Proxy.Upstreams[{position}]"
    upstream = as_dict(raw, what)
    name = str(field(upstream, "DestinationName", "") or "")
    if not name:
        raise ConsulError(400, f"Invalid {what}: upstream destination name cannot be empty")
    port = _int_field(upstream, "LocalBindPort", what)
    out: dict[str, Any] = {"DestinationType": str(field(upstream, "DestinationType", "") or "")}
    out["DestinationType"] = out["DestinationType"] or "service"
    out["DestinationName"] = name
    if datacenter := str(field(upstream, "Datacenter", "") or ""):
        out["Datacenter"] = datacenter
    if address := str(field(upstream, "LocalBindAddress", "") or ""):
        out["LocalBindAddress"] = address
    if port:
        out["LocalBindPort"] = port
    return out


def decode_proxy(raw: Any, kind: str) -> dict[str, Any] | None:
    """The `Proxy` block of a proxy or gateway registration (agent/service.mdx, `Kind`)."""
    if raw is None and not kind:
        return None
    if raw is not None and not kind:
        raise ConsulError(400, "Invalid Proxy: only valid for a proxy or gateway Kind")
    proxy = as_dict(raw, "Proxy")
    destination = str(field(proxy, "DestinationServiceName", "") or "")
    if kind == "connect-proxy" and not destination:
        raise ConsulError(
            400, "Proxy.DestinationServiceName must be non-empty for Connect proxy services"
        )
    upstreams = field(proxy, "Upstreams")
    if upstreams is not None and not isinstance(upstreams, list):
        raise ConsulError(400, "Request decode failed: Proxy.Upstreams: expected a list")
    config = field(proxy, "Config")
    out: dict[str, Any] = {
        "DestinationServiceName": destination,
        "DestinationServiceID": str(field(proxy, "DestinationServiceID", "") or ""),
        "LocalServiceAddress": str(field(proxy, "LocalServiceAddress", "") or ""),
        "LocalServicePort": _int_field(proxy, "LocalServicePort", "Proxy"),
        "Mode": str(field(proxy, "Mode", "") or ""),
        "Config": dict(as_dict(config, "Proxy.Config")) if config is not None else None,
        "Upstreams": [decode_upstream(u, i) for i, u in enumerate(upstreams)]
        if upstreams
        else None,
    }
    return out


def decode_service(raw: Mapping[str, Any], node: str, name_key: str, strict: bool) -> Service:
    """A service definition; `name_key` is "Service" (catalog) or "Name" (agent)."""
    name = field(raw, name_key) or ""
    service_id = field(raw, "ID") or name
    if not name:
        raise ConsulError(400, "Missing service name")
    tags = field(raw, "Tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ConsulError(400, "Request decode failed: Tags: expected list of strings")
    kind = str(field(raw, "Kind", "") or "")
    if kind and kind not in SERVICE_KINDS:
        raise ConsulError(400, f"Invalid service kind: {kind!r}")
    port = int(field(raw, "Port", 0) or 0)
    if kind == "connect-proxy" and not port:
        raise ConsulError(400, "Port must be non-zero for a Connect proxy service")
    connect = as_dict(field(raw, "Connect"), "Connect")
    return Service(
        node=node,
        id=str(service_id),
        name=str(name),
        tags=list(tags),
        address=str(field(raw, "Address", "") or ""),
        port=int(field(raw, "Port", 0) or 0),
        tagged_addresses=decode_tagged_addresses(field(raw, "TaggedAddresses")),
        meta=as_str_map(field(raw, "Meta"), "Meta") or {},
        weights=decode_weights(field(raw, "Weights"), strict),
        enable_tag_override=bool(field(raw, "EnableTagOverride", False)),
        kind=kind,
        proxy=decode_proxy(field(raw, "Proxy"), kind),
        connect_native=bool(field(connect, "Native", False)),
        locality=decode_locality(field(raw, "Locality")),
    )


def decode_locality(raw: Any) -> dict[str, str] | None:
    """`Locality` (Consul 1.17+): an object of optional strings `Region` and `Zone`."""
    if raw is None:
        return None
    body = as_dict(raw, "Locality")
    out = {}
    for key in ("Region", "Zone"):
        value = field(body, key)
        if value is not None and not isinstance(value, str):
            raise ConsulError(400, f"Request decode failed: Locality.{key}: expected a string")
        if value:
            out[key] = value
    return out


_DEFINITION_FIELDS = (
    "HTTP",
    "Method",
    "Header",
    "Body",
    "TCP",
    "GRPC",
    "GRPCUseTLS",
    "H2PING",
    "TLSServerName",
    "TLSSkipVerify",
    "Interval",
    "Timeout",
    "TTL",
    "DeregisterCriticalServiceAfter",
    "Args",
    "ScriptArgs",
    "DockerContainerID",
    "Shell",
    "AliasNode",
    "AliasService",
    "OutputMaxSize",
)


def _definition(raw: Mapping[str, Any]) -> dict[str, Any]:
    nested = field(raw, "Definition")
    source: Mapping[str, Any] = nested if isinstance(nested, dict) else raw
    return {k: v for k in _DEFINITION_FIELDS if (v := field(source, k)) not in (None, "")}


def _check_type(definition: Mapping[str, Any]) -> str:
    if "TTL" in definition:
        return "ttl"
    for key, kind in (
        ("HTTP", "http"),
        ("TCP", "tcp"),
        ("GRPC", "grpc"),
        ("H2PING", "h2ping"),
        ("AliasService", "alias"),
        ("AliasNode", "alias"),
        ("DockerContainerID", "docker"),
        ("Args", "script"),
        ("ScriptArgs", "script"),
    ):
        if key in definition:
            return kind
    return ""


def decode_agent_check(
    raw: Any, node: str, service: Service | None, position: int | None, catalog: Catalog
) -> Check:
    """A check given to the agent (alone, or inside a service definition).

    Defaults as the agent applies them: CheckID `service:<id>` (`:<n>` when a service has
    several), Name `Service '<name>' check`, Status critical unless given. The double runs no
    checks, so a check keeps its status until a test or a TTL update changes it.
    """
    check = as_dict(raw, "Check")
    definition = _definition(check)
    kind = _check_type(definition)
    if not kind:
        raise ConsulError(400, "Invalid check: one of TTL, HTTP, TCP, GRPC, Args ... is required")
    if kind in ("http", "tcp", "grpc", "h2ping", "script", "docker") and not definition.get(
        "Interval"
    ):
        raise ConsulError(
            400,
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks",
        )
    check_id = field(check, "CheckID") or field(check, "ID") or ""
    name = field(check, "Name") or ""
    service_id = service.id if service is not None else str(field(check, "ServiceID") or "")
    if service is not None:
        if not check_id:
            check_id = f"service:{service.id}" + (f":{position}" if position else "")
        if not name:
            name = f"Service '{service.name}' check"
    if not name:
        raise ConsulError(400, "Missing check name")
    check_id = check_id or name
    status = field(check, "Status") or ""
    existing = catalog.checks.get(node, {}).get(str(check_id))
    if status:
        status = validate_status(status)
    else:
        status = existing.status if existing is not None else "critical"
    return Check(
        node=node,
        check_id=str(check_id),
        name=str(name),
        status=status,
        notes=str(field(check, "Notes", "") or ""),
        output=existing.output if existing is not None and not field(check, "Status") else "",
        service_id=service_id,
        type=kind,
        definition=definition,
        agent=True,
    )


def decode_agent_service(
    body: Mapping[str, Any], node: str, catalog: Catalog
) -> list[tuple[Service, list[Check]]]:
    """A service definition and, with `Connect.SidecarService`, its sidecar's (defaults from
    Consul's sidecar reference: ID `<id>-sidecar-proxy`, name `<name>-sidecar-proxy`, the
    parent's tags, meta and weights, a port from 21000-21255, Kind connect-proxy, Proxy
    pointing at the parent, and a TCP check plus an alias check of the parent)."""
    service, checks = _decode_one_agent_service(body, node, catalog)
    connect = as_dict(field(body, "Connect"), "Connect")
    sidecar = field(connect, "SidecarService")
    if sidecar is None:
        return [(service, checks)]
    return [
        (service, checks),
        decode_sidecar_service(service, as_dict(sidecar, "SidecarService"), catalog),
    ]


SIDECAR_PORTS = range(21000, 21256)  # sidecar_min_port .. sidecar_max_port


def decode_sidecar_service(
    parent: Service, raw: Mapping[str, Any], catalog: Catalog
) -> tuple[Service, list[Check]]:
    sidecar_id = f"{parent.id}-sidecar-proxy"
    body = dict(raw)
    for key in ("ID", "Kind", "Connect"):
        body.pop(key, None)
    body.setdefault("Name", field(raw, "Name") or f"{parent.name}-sidecar-proxy")
    if field(raw, "Tags") is None:
        body["Tags"] = list(parent.tags)
    if field(raw, "Meta") is None:
        body["Meta"] = dict(parent.meta)
    if field(raw, "Weights") is None:
        body["Weights"] = dict(parent.weights)
    if field(raw, "Locality") is None and parent.locality is not None:
        body["Locality"] = dict(parent.locality)  # a sidecar is where its service is
    if not field(raw, "Port"):
        existing = catalog.services.get(parent.node, {}).get(sidecar_id)
        used = {s.port for s in catalog.services.get(parent.node, {}).values() if s.kind}
        free = [p for p in SIDECAR_PORTS if p not in used]
        if existing is None and not free:
            raise ConsulError(400, "No port available in the sidecar port range")
        body["Port"] = existing.port if existing is not None else free[0]
    proxy = dict(as_dict(field(raw, "Proxy"), "Proxy"))
    proxy["DestinationServiceName"] = parent.name
    proxy["DestinationServiceID"] = parent.id
    proxy.setdefault("LocalServiceAddress", "127.0.0.1")
    if not field(proxy, "LocalServicePort"):
        proxy["LocalServicePort"] = parent.port
    body |= {"ID": sidecar_id, "Kind": "connect-proxy", "Proxy": proxy}
    if field(raw, "Check") is None and field(raw, "Checks") is None:
        address = body.get("Address") or parent.address or "127.0.0.1"
        body["Checks"] = [
            # The double probes nothing: the listener is taken to be up, as a real agent's
            # first TCP probe finds it once the proxy runs.
            {
                "Name": "Connect Sidecar Listening",
                "TCP": f"{address}:{body['Port']}",
                "Interval": "10s",
                "Status": "passing",
            },
            {"Name": f"Connect Sidecar Aliasing {parent.id}", "AliasService": parent.id},
        ]
    return _decode_one_agent_service(body, parent.node, catalog)


def _decode_one_agent_service(
    body: Mapping[str, Any], node: str, catalog: Catalog
) -> tuple[Service, list[Check]]:
    service = decode_service(body, node, "Name", strict=True)
    raw_checks: list[Any] = []
    single = field(body, "Check")
    if single:
        raw_checks.append(single)
    many = field(body, "Checks") or []
    if not isinstance(many, list):
        raise ConsulError(400, "Request decode failed: Checks: expected a list")
    raw_checks.extend(c for c in many if c)
    several = len(raw_checks) > 1
    checks = [
        decode_agent_check(raw, node, service, (i + 1) if several else None, catalog)
        for i, raw in enumerate(raw_checks)
    ]
    return service, checks


def decode_catalog_check(raw: Any, node: str) -> Check:
    check = as_dict(raw, "Check")
    check_node = field(check, "Node") or node
    if check_node != node:
        raise ConsulError(400, "Check node does not match registration node")
    name = str(field(check, "Name") or "")
    check_id = str(field(check, "CheckID") or name)
    if not check_id:
        raise ConsulError(400, "Missing check ID")
    status = field(check, "Status") or "critical"
    definition = _definition(as_dict(field(check, "Definition"), "Definition"))
    return Check(
        node=node,
        check_id=check_id,
        name=name,
        status=validate_status(status),
        notes=str(field(check, "Notes", "") or ""),
        output=str(field(check, "Output", "") or ""),
        service_id=str(field(check, "ServiceID", "") or ""),
        type=str(field(check, "Type", "") or _check_type(definition)),
        definition=definition,
    )


def set_service_maintenance(
    catalog: Catalog, index: int, node: str, service_id: str, enabled: bool, reason: str
) -> None:
    svc = catalog.services.get(node, {}).get(service_id)
    if svc is None:
        raise ConsulError(404, f'Unknown service ID "{service_id}"')
    check_id = SERVICE_MAINT_PREFIX + service_id
    if not enabled:
        catalog.delete_check(index, node, check_id)
        return
    catalog.ensure_check(
        index,
        Check(
            node=node,
            check_id=check_id,
            name="Service Maintenance Mode",
            status="critical",
            notes=reason or _SERVICE_MAINT_DEFAULT,
            service_id=service_id,
            type="maintenance",
        ),
    )


def set_node_maintenance(
    catalog: Catalog, index: int, node: str, enabled: bool, reason: str
) -> None:
    if node not in catalog.nodes:
        raise ConsulError(404, f'Unknown node "{node}"')
    if not enabled:
        catalog.delete_check(index, node, NODE_MAINT_CHECK_ID)
        return
    catalog.ensure_check(
        index,
        Check(
            node=node,
            check_id=NODE_MAINT_CHECK_ID,
            name="Node Maintenance Mode",
            status="critical",
            notes=reason or _NODE_MAINT_DEFAULT,
            type="maintenance",
        ),
    )
