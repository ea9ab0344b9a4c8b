"""/v1/session/* endpoints (Consul's api-docs/session.mdx), and the TTL timers.

``create`` and ``renew`` arm a timer in the server loop for TTL x 2 (``sessionstore``); when
it fires and the session was not renewed since, the session is invalidated in one write,
which wakes the blocking KV queries on the keys it held. Not modelled: invalidation by a
node or service check turning critical (the double's nodes never fail their serfHealth).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .core import AGENT_NODE, Core
from .decode import ConsulError, field, parse_go_duration
from .http_common import (
    CORE,
    blocking_read,
    json_reply,
    read_json,
    request_dc,
    require_leader,
)
from .sessionstore import DEFAULT_LOCK_DELAY, TTL_MULTIPLIER, Session
from .state import DatacenterState

__all__ = ["expire_sessions", "routes"]

routes = web.RouteTableDef()


def _lock_delay(raw: Any) -> float:
    """Consul's ``fixupLockDelay``: a duration string, or a number (< 1000: seconds, else ns)."""
    if raw is None:
        return DEFAULT_LOCK_DELAY
    if isinstance(raw, str):
        try:
            return parse_go_duration(raw)
        except ValueError:
            raise ConsulError(400, f"Request decode failed: invalid LockDelay {raw!r}") from None
    if isinstance(raw, int | float):
        return float(raw) if raw < 1000 else float(raw) / 1e9
    raise ConsulError(400, "Request decode failed: invalid LockDelay")


def _default_node(core: Core, state: DatacenterState) -> str:
    return AGENT_NODE if state.name == core.local_dc else f"double-server-{state.name}"


def expire_sessions(core: Core, dc: str) -> None:
    """Invalidate every session of ``dc`` whose TTL x 2 has passed without a renewal."""
    with core.write(dc) as state:
        for session in state.kv.sessions.expired():
            state.kv.invalidate(state.raft.next_index(), session)


def _arm(core: Core, dc: str, delay: float | None) -> None:
    if delay is None:
        return
    # A little after the deadline, so that the session is expired when the timer looks.
    asyncio.get_running_loop().call_later(delay + 0.01, expire_sessions, core, dc)


def _session_index(state: DatacenterState) -> int:
    return state.raft.tables.get("sessions", 0)


@routes.put("/v1/session/create")
async def session_create(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await read_json(request)
    if body is not None and not isinstance(body, dict):
        raise ConsulError(400, "Request decode failed: expected an object")
    body = body or {}
    state = request_dc(request, core)
    ttl = str(field(body, "TTL", "") or "")
    try:
        ttl_seconds = parse_go_duration(ttl) if ttl else 0.0
    except ValueError as exc:
        raise ConsulError(500, f"Session TTL '{ttl}' invalid: {exc}") from None
    node_checks = field(body, "NodeChecks")
    if node_checks is None:
        node_checks = field(body, "Checks")
    require_leader(core, request, read=False)
    with core.write(state.name):
        node = str(field(body, "Node", "") or _default_node(core, state))
        if node not in state.catalog.nodes:
            raise ConsulError(500, "failed inserting session: Missing node registration")
        session = state.kv.sessions.create(
            state.raft.next_index(),
            node=node,
            name=str(field(body, "Name", "") or ""),
            lock_delay=_lock_delay(field(body, "LockDelay")),
            behavior=str(field(body, "Behavior", "") or "release"),
            ttl=ttl,
            ttl_seconds=ttl_seconds,
            node_checks=None if node_checks is None else [str(c) for c in node_checks],
            service_checks=field(body, "ServiceChecks"),
        )
        state.raft.touch_table("sessions", session.create_index)
    _arm(core, state.name, session.ttl_seconds * TTL_MULTIPLIER if session.ttl_seconds else None)
    return json_reply(request, {"ID": session.id})


@routes.put("/v1/session/destroy/{uuid}")
async def session_destroy(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    require_leader(core, request, read=False)
    with core.write(state.name):
        session = state.kv.sessions.get(request.match_info["uuid"])
        if session is not None:
            state.kv.invalidate(state.raft.next_index(), session)
    return json_reply(request, True)


@routes.put("/v1/session/renew/{uuid}")
async def session_renew(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    session_id = request.match_info["uuid"]
    require_leader(core, request, read=False)
    with core.lock:
        session = state.kv.sessions.get(session_id)
        if session is None:
            raise ConsulError(404, f"Session id '{session_id}' not found")
        delay = state.kv.sessions.renew(session)
        reply = [session.to_json()]
    _arm(core, state.name, delay)
    return json_reply(request, reply)


async def _list(request: web.Request, keep: Any) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)

    def render() -> web.Response:
        sessions: list[Session] = sorted(
            state.kv.sessions.sessions.values(), key=lambda s: s.create_index
        )
        return json_reply(request, [s.to_json() for s in sessions if keep(s)])

    return await blocking_read(
        request, state, [("sessions",)], lambda: _session_index(state), render
    )


@routes.get("/v1/session/info/{uuid}")
async def session_info(request: web.Request) -> web.Response:
    wanted = request.match_info["uuid"]
    return await _list(request, lambda s: s.id == wanted)


@routes.get("/v1/session/node/{node}")
async def session_node(request: web.Request) -> web.Response:
    wanted = request.match_info["node"]
    return await _list(request, lambda s: s.node == wanted)


@routes.get("/v1/session/list")
async def session_list(request: web.Request) -> web.Response:
    return await _list(request, lambda s: True)
