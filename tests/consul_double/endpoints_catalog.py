"""/v1/catalog/* and /v1/health/* endpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from .catalog import Catalog, CatalogError
from .decode import ConsulError, as_str_map, field, query_flag
from .filterexpr import CHECK_SELECTORS, compile_filter
from .http_common import (
    CORE,
    blocking_read,
    json_reply,
    read_json_object,
    request_dc,
    require_leader,
)
from .model import HEALTH_STATES, Node
from .ops import decode_catalog_check, decode_service
from .raft import Topic

__all__ = ["routes"]

routes = web.RouteTableDef()

Entry = dict[str, Any]


# -- query filters ---------------------------------------------------------------------------


def _node_meta_filter(request: web.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in request.query.getall("node-meta", []):
        key, _, value = raw.partition(":")
        out[key] = value
    return out


def _meta_matches(meta: dict[str, str] | None, wanted: dict[str, str]) -> bool:
    return all((meta or {}).get(k) == v for k, v in wanted.items())


def _has_tags(tags: list[str], wanted: list[str]) -> bool:
    """Consul's tag filter: every requested tag present, compared case-insensitively."""
    have = {t.lower() for t in tags}
    return all(t.lower() in have for t in wanted)


def _filter(
    request: web.Request, selectors: frozenset[str] | None = None
) -> Callable[[Entry], bool] | None:
    expression = request.query.get("filter")
    return compile_filter(expression, selectors) if expression else None


def _service_topics(catalog: Catalog, name: str, connect: bool = False) -> list[Topic]:
    """What moves a per-service index (see Catalog.service_index), or with `connect` the
    index of the service's mesh endpoints (Catalog.connect_service_index)."""
    key = name.lower()
    topics: list[Topic] = [("connect", key) if connect else ("svc", key)]
    if not (key in catalog.connect_index if connect else catalog.by_name.get(key)):
        topics += [("extinct",), ("nodes",), ("services",), ("checks",)]
    return topics


def _service_index(catalog: Catalog, name: str, connect: bool) -> Callable[[], int]:
    if connect:
        return lambda: catalog.connect_service_index(name)
    return lambda: catalog.service_index(name)


# -- catalog ---------------------------------------------------------------------------------


@routes.put("/v1/catalog/register")
async def catalog_register(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await read_json_object(request)
    node_name = field(body, "Node") or ""
    if not node_name:
        raise ConsulError(400, "Must provide node")
    state = request_dc(request, core, field(body, "Datacenter"))
    require_leader(core, request, read=False)
    raw_service = field(body, "Service")
    raw_checks: list[Any] = [c for c in [field(body, "Check"), *(field(body, "Checks") or [])] if c]
    with core.write(state.name):
        catalog = state.catalog
        existing = catalog.nodes.get(node_name)
        skip = bool(field(body, "SkipNodeUpdate", False)) and existing is not None
        address = field(body, "Address") or ""
        if not skip and not address:
            raise ConsulError(400, "Must provide address if SkipNodeUpdate is not set")
        service = (
            decode_service(raw_service, node_name, "Service", strict=False) if raw_service else None
        )
        checks = [decode_catalog_check(c, node_name) for c in raw_checks]
        known = set(catalog.services.get(node_name, {})) | ({service.id} if service else set())
        if any(c.service_id and c.service_id not in known for c in checks):
            # Validated up front so a failed registration changes nothing (Consul applies
            # the whole request in one transaction).
            raise ConsulError(500, "Missing service registration")
        index = state.raft.next_index()
        try:
            if not skip:
                node_id = field(body, "ID") or (existing.id if existing else "")
                catalog.ensure_node(
                    index,
                    Node(
                        name=node_name,
                        address=address,
                        datacenter=state.name,
                        id=str(node_id),
                        tagged_addresses=as_str_map(
                            field(body, "TaggedAddresses"), "TaggedAddresses"
                        ),
                        meta=as_str_map(field(body, "NodeMeta"), "NodeMeta"),
                    ),
                )
            if service is not None:
                catalog.ensure_service(index, service)
            for check in checks:
                catalog.ensure_check(index, check)
        except CatalogError as exc:
            raise ConsulError(500, str(exc)) from exc
    return json_reply(request, True)


@routes.put("/v1/catalog/deregister")
async def catalog_deregister(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await read_json_object(request)
    node = field(body, "Node") or ""
    if not node:
        raise ConsulError(400, "Must provide node")
    state = request_dc(request, core, field(body, "Datacenter"))
    require_leader(core, request, read=False)
    with core.write(state.name):
        index = state.raft.next_index()
        if service_id := field(body, "ServiceID"):
            state.catalog.delete_service(index, node, str(service_id))
        elif check_id := field(body, "CheckID"):
            state.catalog.delete_check(index, node, str(check_id))
        else:
            state.catalog.delete_node(index, node)
    return json_reply(request, True)


@routes.get("/v1/catalog/datacenters")
async def catalog_datacenters(request: web.Request) -> web.Response:
    return json_reply(request, request.app[CORE].datacenter_names())


@routes.get("/v1/catalog/services")
async def catalog_services(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    catalog = state.catalog
    node_meta = _node_meta_filter(request)
    predicate = _filter(request)

    def render() -> web.Response:
        if not node_meta and predicate is None:
            return json_reply(request, catalog.service_tags())
        tags: dict[str, set[str]] = {}
        for entry in catalog.all_catalog_service_entries():
            if _meta_matches(entry["NodeMeta"], node_meta) and (
                predicate is None or predicate(entry)
            ):
                tags.setdefault(entry["ServiceName"], set()).update(entry["ServiceTags"])
        return json_reply(request, {name: sorted(tags[name]) for name in sorted(tags)})

    return await blocking_read(
        request, state, [("services",)], lambda: state.raft.tables["services"], render
    )


@routes.get("/v1/catalog/service/{name}")
async def catalog_service(request: web.Request) -> web.Response:
    return await _catalog_service(request, connect=False)


@routes.get("/v1/catalog/connect/{name}")
async def catalog_connect(request: web.Request) -> web.Response:
    """Same parameters and response format as /v1/catalog/service/:name (catalog.mdx)."""
    return await _catalog_service(request, connect=True)


async def _catalog_service(request: web.Request, connect: bool) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    name = request.match_info["name"]
    tags = request.query.getall("tag", [])
    node_meta = _node_meta_filter(request)
    predicate = _filter(request)

    def render() -> web.Response:
        entries = [
            e
            for e in state.catalog.catalog_service_entries(name, connect)
            if _has_tags(e["ServiceTags"], tags)
            and _meta_matches(e["NodeMeta"], node_meta)
            and (predicate is None or predicate(e))
        ]
        return json_reply(request, entries)

    with core.lock:
        topics = _service_topics(state.catalog, name, connect)
    return await blocking_read(
        request, state, topics, _service_index(state.catalog, name, connect), render
    )


@routes.get("/v1/catalog/nodes")
async def catalog_nodes(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    node_meta = _node_meta_filter(request)
    predicate = _filter(request)

    def render() -> web.Response:
        nodes = [
            n
            for n in state.catalog.node_list()
            if _meta_matches(n["Meta"], node_meta) and (predicate is None or predicate(n))
        ]
        return json_reply(request, nodes)

    return await blocking_read(
        request, state, [("nodes",)], lambda: state.raft.tables["nodes"], render
    )


# -- health ----------------------------------------------------------------------------------


@routes.get("/v1/health/service/{name}")
async def health_service(request: web.Request) -> web.Response:
    return await _health_service(request, connect=False)


@routes.get("/v1/health/connect/{name}")
async def health_connect(request: web.Request) -> web.Response:
    """Same parameters and response format as /v1/health/service/:name (health.mdx): the
    instances of its connect-proxies (and Connect-native instances of it)."""
    return await _health_service(request, connect=True)


async def _health_service(request: web.Request, connect: bool) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    name = request.match_info["name"]
    tags = request.query.getall("tag", [])
    node_meta = _node_meta_filter(request)
    predicate = _filter(request)
    try:
        passing = query_flag(request.query, "passing")
    except ValueError:
        raise ConsulError(400, "Invalid value for ?passing") from None

    def keep(entry: Entry) -> bool:
        if passing and any(c["Status"] != "passing" for c in entry["Checks"]):
            return False
        return (
            _has_tags(entry["Service"]["Tags"], tags)
            and _meta_matches(entry["Node"]["Meta"], node_meta)
            and (predicate is None or predicate(entry))
        )

    def render() -> web.Response:
        entries = state.catalog.health_entries(name, connect)
        return json_reply(request, [e for e in entries if keep(e)])

    with core.lock:
        topics = _service_topics(state.catalog, name, connect)
    return await blocking_read(
        request, state, topics, _service_index(state.catalog, name, connect), render
    )


@routes.get("/v1/health/checks/{name}")
async def health_checks(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    name = request.match_info["name"]
    predicate = _filter(request, CHECK_SELECTORS)

    def render() -> web.Response:
        checks = [
            c.to_json()
            for svc in state.catalog.instances(name)
            for c in state.catalog.checks_for(svc)
            if c.service_id == svc.id
        ]
        return json_reply(request, [c for c in checks if predicate is None or predicate(c)])

    with core.lock:
        topics = _service_topics(state.catalog, name)
    return await blocking_read(
        request, state, topics, lambda: state.catalog.service_index(name), render
    )


@routes.get("/v1/health/state/{state}")
async def health_state(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    wanted = request.match_info["state"]
    if wanted != "any" and wanted not in HEALTH_STATES:
        raise ConsulError(400, "Invalid check state")
    # health.mdx, "List Checks in State": "The filter will be executed against each health
    # check in the results list" — so a blocking query with a filter still wakes whenever
    # the checks table's index moves (blocking.mdx: a return is "no guarantee of a change"),
    # and answers only the checks that match: `filter=Status != "passing"` is what the
    # watcher uses to read the failing checks without every passing one.
    predicate = _filter(request, CHECK_SELECTORS)

    def render() -> web.Response:
        checks = [
            c.to_json() for c in state.catalog.all_checks() if wanted == "any" or c.status == wanted
        ]
        return json_reply(request, [c for c in checks if predicate is None or predicate(c)])

    return await blocking_read(
        request, state, [("checks",)], lambda: state.raft.tables["checks"], render
    )


@routes.get("/v1/health/node/{node}")
async def health_node(request: web.Request) -> web.Response:
    core = request.app[CORE]
    state = request_dc(request, core)
    node = request.match_info["node"]
    predicate = _filter(request, CHECK_SELECTORS)

    def render() -> web.Response:
        checks = [
            c.to_json()
            for _, c in sorted(state.catalog.checks.get(node, {}).items())
            if predicate is None or predicate(c.to_json())
        ]
        return json_reply(request, checks)

    return await blocking_read(
        request, state, [("checks",)], lambda: state.raft.tables["checks"], render
    )
