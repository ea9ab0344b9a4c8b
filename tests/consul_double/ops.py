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
    "decode_tagged_addresses",
    "decode_weights",
    "set_node_maintenance",
    "set_service_maintenance",
    "validate_status",
]

SERVICE_MAINT_PREFIX = "_service_maintenance:"
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


def decode_service(raw: Mapping[str, Any], node: str, name_key: str, strict: bool) -> Service:
    """A service definition; `name_key` is "Service" (catalog) or "Name" (agent)."""
    name = field(raw, name_key) or ""
    service_id = field(raw, "ID") or name
    if not name:
        raise ConsulError(400, "Missing service name")
    tags = field(raw, "Tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ConsulError(400, "Request decode failed: Tags: expected list of strings")
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
        kind=str(field(raw, "Kind", "") or ""),
    )


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
    )


def decode_agent_service(
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
