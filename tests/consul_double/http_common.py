"""HTTP plumbing shared by the endpoint modules: middleware, replies, blocking reads.

Every request passes through `middleware`, in this order: instrumentation (count, in-flight),
injected hang, injected failure, ACL check, then the endpoint. Errors are plain text with the
status Consul uses (`ConsulError`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .blocking import parse_blocking_params, wait_with_jitter
from .core import Core
from .decode import ConsulError, as_dict
from .raft import Topic
from .state import DatacenterState
from .stats import RecordedRequest

__all__ = [
    "CORE",
    "blocking_read",
    "json_reply",
    "middleware",
    "read_json",
    "request_dc",
    "request_token",
    "require_leader",
]

CORE = web.AppKey("consul_double_core", Core)

# Endpoints that need no ACL (Consul: catalog/datacenters and status/* require none).
_ACL_EXEMPT = ("/v1/catalog/datacenters", "/v1/status/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_token(request: web.Request) -> str | None:
    """The ACL token in Consul's order: ?token=, X-Consul-Token, Authorization: Bearer."""
    token = request.query.get("token")
    if token:
        return token
    token = request.headers.get("X-Consul-Token")
    if token:
        return token
    auth = request.headers.get("Authorization", "")
    parts = auth.split(" ")
    if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1].strip():
        return parts[1].strip()
    return None


def text_reply(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


def json_reply(request: web.Request, body: Any, status: int = 200) -> web.Response:
    if "pretty" in request.query:
        data = json.dumps(body, indent=4) + "\n"
    else:
        data = json.dumps(body, separators=(",", ":"))
    return web.Response(status=status, body=data.encode(), content_type="application/json")


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConsulError(400, f"Request decode failed: {exc}") from exc


async def read_json_object(request: web.Request) -> dict[str, Any]:
    return as_dict(await read_json(request), "body")


def request_dc(request: web.Request, core: Core, body_dc: str | None = None) -> DatacenterState:
    return core.state(body_dc or request.query.get("dc") or None)


def require_leader(core: Core, request: web.Request, read: bool) -> None:
    """Without a leader Consul fails writes and non-stale reads with 500 No cluster leader."""
    if core.has_leader or (read and "stale" in request.query):
        return
    raise ConsulError(500, "No cluster leader")


def _set_read_headers(
    resp: web.StreamResponse, core: Core, request: web.Request, index: int
) -> None:
    resp.headers["X-Consul-Index"] = str(max(index, 1))
    resp.headers["X-Consul-KnownLeader"] = "true" if core.has_leader else "false"
    resp.headers["X-Consul-LastContact"] = "0"
    if "stale" in request.query:
        consistency = "stale"
    elif "consistent" in request.query:
        consistency = "consistent"
    else:
        consistency = "leader"
    resp.headers["X-Consul-Effective-Consistency"] = consistency


async def blocking_read(
    request: web.Request,
    state: DatacenterState,
    topics: list[Topic],
    index_of: Callable[[], int],
    render: Callable[[], web.Response],
) -> web.Response:
    """Answer a read, first blocking while `?index=N` is not yet passed (Consul semantics).

    `index_of` and `render` run under the double's lock. A request with index > 0 waits for a
    publish on one of `topics` (qualified with the datacenter) that moves `index_of()` past N,
    for a reset of the indexes, or for `wait` (+ up to wait/16 jitter) to elapse.
    """
    core = request.app[CORE]
    min_index, wait = parse_blocking_params(request.query)
    require_leader(core, request, read=True)
    if min_index > 0:
        epoch = state.raft.epoch

        def passed() -> bool:
            with core.lock:
                return index_of() > min_index or state.raft.epoch != epoch

        qualified = [(state.name, *topic) for topic in topics]
        with core.blocked(request.path):
            await core.notifier.wait_until(qualified, passed, wait_with_jitter(wait, core.jitter))
        require_leader(core, request, read=True)
    with core.lock:
        index = index_of()
        resp = render()
    _set_read_headers(resp, core, request, index)
    return resp


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    core = request.app[CORE]
    token = request_token(request)
    record = RecordedRequest(
        method=request.method,
        path=request.path,
        query=tuple(request.query.items()),
        token=token,
        client=request.remote or "",
    )
    core.request_started(record)
    response: web.StreamResponse | None = None
    try:
        response = await _handle(core, request, token, handler)
        return response
    finally:
        body = getattr(response, "body", None)
        core.request_finished(record, len(body) if isinstance(body, bytes) else 0)


async def _handle(
    core: Core, request: web.Request, token: str | None, handler: Handler
) -> web.StreamResponse:
    try:
        hang = core.hang_for(request.path)
        if hang is not None:
            await hang.wait()
        rule = core.take_failure(request.path)
        if rule is not None:
            return text_reply(rule.status, rule.body)
        if core.acl_token is not None and not request.path.startswith(_ACL_EXEMPT):
            if token is None:
                return text_reply(403, "Permission denied")
            if token != core.acl_token:
                return text_reply(403, "ACL not found")
        return await handler(request)
    except ConsulError as exc:
        return text_reply(exc.status, exc.text)
