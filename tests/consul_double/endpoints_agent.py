"""/v1/agent/* and /v1/status/* endpoints.

The double is the agent of one node (`double-agent`, 127.0.0.1) in the local datacenter. What
a real agent syncs to the catalog by anti-entropy is written to the catalog at once. Agent
endpoints keep working without a leader (they are local to the agent).
"""

from __future__ import annotations

from aiohttp import web

from .core import AGENT_ADDRESS, AGENT_NODE
from .decode import ConsulError, field, parse_bool
from .http_common import CORE, json_reply, read_json_object
from .ops import (
    decode_agent_check,
    decode_agent_service,
    set_node_maintenance,
    set_service_maintenance,
    validate_status,
)
from .state import node_id_for

__all__ = ["routes"]

routes = web.RouteTableDef()


def _empty_ok() -> web.Response:
    return web.Response(status=200)


def _enable_param(request: web.Request) -> bool:
    if "enable" not in request.query:
        raise ConsulError(400, "Missing value for enable")
    try:
        return parse_bool(request.query["enable"])
    except ValueError:
        raise ConsulError(400, f"Invalid value for enable: {request.query['enable']!r}") from None


@routes.get("/v1/agent/self")
async def agent_self(request: web.Request) -> web.Response:
    core = request.app[CORE]
    return json_reply(
        request,
        {
            "Config": {
                "Datacenter": core.local_dc,
                "NodeName": AGENT_NODE,
                "NodeID": node_id_for(core.local_dc, AGENT_NODE),
                "Server": True,
                "Revision": "consul-double",
                "Version": "1.20.0",
            },
            "Member": {
                "Name": AGENT_NODE,
                "Addr": AGENT_ADDRESS,
                "Port": 8301,
                "Tags": {"dc": core.local_dc, "role": "consul", "port": "8300"},
                "Status": 1,
            },
            "Meta": {"consul-network-segment": ""},
        },
    )


@routes.get("/v1/status/leader")
async def status_leader(request: web.Request) -> web.Response:
    core = request.app[CORE]
    return json_reply(request, f"{AGENT_ADDRESS}:8300" if core.has_leader else "")


@routes.get("/v1/status/peers")
async def status_peers(request: web.Request) -> web.Response:
    return json_reply(request, [f"{AGENT_ADDRESS}:8300"])


@routes.get("/v1/agent/services")
async def agent_services(request: web.Request) -> web.Response:
    core = request.app[CORE]
    with core.lock:
        state = core.state(None)
        services = state.catalog.services.get(AGENT_NODE, {})
        body = {sid: svc.agent_json(state.name) for sid, svc in sorted(services.items())}
    return json_reply(request, body)


@routes.get("/v1/agent/checks")
async def agent_checks(request: web.Request) -> web.Response:
    core = request.app[CORE]
    with core.lock:
        checks = core.state(None).catalog.checks.get(AGENT_NODE, {})
        body = {}
        for cid, chk in sorted(checks.items()):
            entry = chk.to_json()
            for key in ("CreateIndex", "ModifyIndex"):
                entry.pop(key)
            body[cid] = entry
    return json_reply(request, body)


@routes.put("/v1/agent/service/register")
async def agent_service_register(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await read_json_object(request)
    replace = "replace-existing-checks" in request.query
    with core.write(None) as state:
        catalog = state.catalog
        registrations = decode_agent_service(body, AGENT_NODE, catalog)
        index = state.raft.next_index()
        for service, checks in registrations:  # the service, then its sidecar if nested
            catalog.ensure_service(index, service)
            for check in checks:
                catalog.ensure_check(index, check)
            if replace:
                keep = {c.check_id for c in checks}
                for cid, chk in list(catalog.checks[AGENT_NODE].items()):
                    if chk.service_id == service.id and cid not in keep:
                        catalog.delete_check(index, AGENT_NODE, cid)
    return _empty_ok()


@routes.put("/v1/agent/service/deregister/{service_id}")
async def agent_service_deregister(request: web.Request) -> web.Response:
    core = request.app[CORE]
    service_id = request.match_info["service_id"]
    with core.write(None) as state:
        index = state.raft.next_index()
        # A sidecar registered nested in its parent goes with it (Consul's agent does this).
        sidecar = state.catalog.services.get(AGENT_NODE, {}).get(f"{service_id}-sidecar-proxy")
        if sidecar is not None and (sidecar.proxy or {}).get("DestinationServiceID") == service_id:
            state.catalog.delete_service(index, AGENT_NODE, sidecar.id)
        state.catalog.delete_service(index, AGENT_NODE, service_id)
    return _empty_ok()


@routes.put("/v1/agent/service/maintenance/{service_id}")
async def agent_service_maintenance(request: web.Request) -> web.Response:
    core = request.app[CORE]
    enabled = _enable_param(request)
    reason = request.query.get("reason", "")
    with core.write(None) as state:
        service_id = request.match_info["service_id"]
        if service_id not in state.catalog.services.get(AGENT_NODE, {}):
            raise ConsulError(404, f'Unknown service ID "{service_id}"')
        set_service_maintenance(
            state.catalog, state.raft.next_index(), AGENT_NODE, service_id, enabled, reason
        )
    return _empty_ok()


@routes.put("/v1/agent/maintenance")
async def agent_maintenance(request: web.Request) -> web.Response:
    core = request.app[CORE]
    enabled = _enable_param(request)
    with core.write(None) as state:
        set_node_maintenance(
            state.catalog,
            state.raft.next_index(),
            AGENT_NODE,
            enabled,
            request.query.get("reason", ""),
        )
    return _empty_ok()


@routes.put("/v1/agent/check/register")
async def agent_check_register(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await read_json_object(request)
    with core.write(None) as state:
        catalog = state.catalog
        service = None
        if service_id := field(body, "ServiceID"):
            service = catalog.services.get(AGENT_NODE, {}).get(str(service_id))
            if service is None:
                raise ConsulError(400, f'ServiceID "{service_id}" does not exist')
        check = decode_agent_check(body, AGENT_NODE, None, None, catalog)
        catalog.ensure_check(state.raft.next_index(), check)
    return _empty_ok()


@routes.put("/v1/agent/check/deregister/{check_id}")
async def agent_check_deregister(request: web.Request) -> web.Response:
    core = request.app[CORE]
    with core.write(None) as state:
        state.catalog.delete_check(
            state.raft.next_index(), AGENT_NODE, request.match_info["check_id"]
        )
    return _empty_ok()


async def _ttl_update(request: web.Request, status: str, output: str) -> web.Response:
    core = request.app[CORE]
    check_id = request.match_info["check_id"]
    with core.write(None) as state:
        check = state.catalog.checks.get(AGENT_NODE, {}).get(check_id)
        if check is None or check.type != "ttl":
            raise ConsulError(404, f'CheckID "{check_id}" does not have associated TTL')
        if check.status != status or check.output != output:
            state.catalog.update_check(
                state.raft.next_index(), AGENT_NODE, check_id, status=status, output=output
            )
    return _empty_ok()


@routes.put("/v1/agent/check/pass/{check_id}")
async def agent_check_pass(request: web.Request) -> web.Response:
    return await _ttl_update(request, "passing", request.query.get("note", ""))


@routes.put("/v1/agent/check/warn/{check_id}")
async def agent_check_warn(request: web.Request) -> web.Response:
    return await _ttl_update(request, "warning", request.query.get("note", ""))


@routes.put("/v1/agent/check/fail/{check_id}")
async def agent_check_fail(request: web.Request) -> web.Response:
    return await _ttl_update(request, "critical", request.query.get("note", ""))


@routes.put("/v1/agent/check/update/{check_id}")
async def agent_check_update(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    status = validate_status(field(body, "Status"))
    return await _ttl_update(request, status, str(field(body, "Output", "") or ""))
