"""/v1/kv/* and /v1/txn endpoints."""

from __future__ import annotations

from aiohttp import web

from .decode import ConsulError, field
from .http_common import CORE, blocking_read, json_reply, read_json, request_dc, require_leader
from .kvstore import MAX_TXN_OPS, MAX_VALUE_SIZE

__all__ = ["routes"]

routes = web.RouteTableDef()


def _uint_param(request: web.Request, name: str) -> int | None:
    if name not in request.query:
        return None
    try:
        value = int(request.query[name])
    except ValueError:
        raise ConsulError(400, f"Invalid {name} value") from None
    if value < 0:
        raise ConsulError(400, f"Invalid {name} value")
    return value


@routes.get("/v1/kv/{key:.*}")
async def kv_get(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    kv = state.kv
    key = request.match_info["key"]
    keys_only = "keys" in request.query  # presence flags, as Consul reads them
    recurse = "recurse" in request.query or keys_only
    raw = "raw" in request.query
    separator = request.query.get("separator", "")

    def not_found() -> web.Response:
        return web.Response(status=404)

    def render() -> web.Response:
        if keys_only:
            keys = kv.keys(key, separator)
            return json_reply(request, keys) if keys else not_found()
        if recurse:
            entries = kv.list_prefix(key)
            return json_reply(request, [e.to_json() for e in entries]) if entries else not_found()
        entry = kv.get(key)
        if entry is None:
            return not_found()
        if raw:
            resp = web.Response(body=entry.value or b"", content_type="text/plain")
            resp.headers["X-Content-Type-Options"] = "nosniff"
            return resp
        return json_reply(request, [entry.to_json()])

    def index_of() -> int:
        return kv.list_index(key) if recurse else kv.key_index(key)

    return await blocking_read(request, state, [("kvs",)], index_of, render)


@routes.put("/v1/kv/{key:.*}")
async def kv_put(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    key = request.match_info["key"]
    if not key:
        raise ConsulError(400, "Missing key name")
    flags = _uint_param(request, "flags") or 0
    cas = _uint_param(request, "cas")
    acquire = request.query.get("acquire")
    release = request.query.get("release")
    body = await request.read()
    if len(body) > MAX_VALUE_SIZE:
        raise ConsulError(
            413, f"Request body({len(body)} bytes) too large, max size: {MAX_VALUE_SIZE} bytes."
        )
    require_leader(core, request, read=False)
    value = body or None  # an empty body is stored as nil and read back as null
    with core.write(state.name):
        state.kv.write_log.append((key,))
        index = state.raft.next_index()
        if acquire is not None:
            ok = state.kv.acquire(index, key, value, flags, acquire)
        elif release is not None:
            ok = state.kv.release(index, key, value, flags, release)
        elif cas is None:
            state.kv.set(index, key, value, flags)
            ok = True
        else:
            ok = state.kv.cas(index, key, value, flags, cas)
    return json_reply(request, ok)


@routes.delete("/v1/kv/{key:.*}")
async def kv_delete(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    key = request.match_info["key"]
    recurse = "recurse" in request.query
    if not key and not recurse:
        raise ConsulError(400, "Missing key name")
    cas = _uint_param(request, "cas")
    require_leader(core, request, read=False)
    ok = True
    with core.write(state.name):
        index = state.raft.next_index()
        if recurse:
            state.kv.delete_tree(index, key)
        elif cas is not None:
            ok = state.kv.delete_cas(index, key, cas)
        else:
            state.kv.delete(index, key)
    return json_reply(request, ok)


@routes.put("/v1/txn")
async def txn(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    ops = await read_json(request)
    if not isinstance(ops, list):
        raise ConsulError(400, "Failed to parse body: expected a JSON array of operations")
    if len(ops) > MAX_TXN_OPS:
        raise ConsulError(
            413, f"Transaction contains too many operations ({len(ops)} > {MAX_TXN_OPS})"
        )
    read_only = all(
        isinstance(op, dict)
        and isinstance(kv := field(op, "KV"), dict)
        and str(field(kv, "Verb", "")).startswith(("get", "check-"))
        for op in ops
    )
    require_leader(core, request, read=read_only)
    with core.write(state.name):
        results, errors = state.kv.txn(ops)
    resp = json_reply(
        request,
        {"Results": results, "Errors": errors or None},
        status=409 if errors else 200,
    )
    if read_only:
        resp.headers["X-Consul-KnownLeader"] = "true" if core.has_leader else "false"
        resp.headers["X-Consul-LastContact"] = "0"
    return resp
