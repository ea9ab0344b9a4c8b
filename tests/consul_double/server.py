"""`ConsulDouble`: the Consul HTTP API test double, served from its own thread and event loop.

    with ConsulDouble() as consul:
        consul.register("web", "10.0.0.1", 8080)
        client = consul_client(consul.url)           # any HTTP client, e.g. py-consul
        consul.set_check("web-10.0.0.1-8080", "critical")

Every control method is thread-safe and goes through the same state code as the HTTP
endpoints, so indexes move exactly as they would for a client writing over HTTP.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from . import endpoints_agent, endpoints_catalog, endpoints_kv, endpoints_session
from .core import AGENT_ADDRESS, AGENT_NODE, Core, FailRule
from .http_common import CORE, middleware
from .model import Check, Node, Service
from .ops import (
    decode_locality,
    decode_sidecar_service,
    decode_tagged_addresses,
    decode_weights,
    set_node_maintenance,
    set_service_maintenance,
    validate_status,
)
from .state import SERF_CHECK_ID, DatacenterState, node_id_for, serf_check
from .stats import RecordedRequest

__all__ = ["AGENT_ADDRESS", "AGENT_NODE", "ConsulDouble", "RecordedRequest"]

T = TypeVar("T")
TaggedAddresses = Mapping[str, tuple[str, int] | Mapping[str, Any]]


class ConsulDouble:
    """A fake Consul agent+server speaking the subset of the HTTP API xds-server uses.

    Args:
        datacenters: every datacenter the double knows; each has its own index, catalog, KV.
        local_dc: the agent's datacenter (the default for `?dc=`).
        acl_token: when set, every request must carry this token (403 otherwise).
        ssl_context: serve HTTPS with this server context.
        jitter: add Consul's up-to-wait/16 random extra time to blocking waits.
        consul_service: register the `consul` service on each datacenter's server node, as a
            real cluster does (it then shows up in /v1/catalog/services).
        max_conns_per_client: like Consul's `limits.http_max_conns_per_client` (200 on a real
            agent): a client IP's connections beyond it are closed on accept. None: no limit.
        port: the port to bind (0: the OS picks).
        session_ttl_min: like Consul's server setting ``session_ttl_min`` (10s by default):
            the shortest TTL ``/v1/session/create`` accepts.
    """

    def __init__(
        self,
        datacenters: Iterable[str] = ("dc1",),
        local_dc: str = "dc1",
        acl_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        jitter: bool = True,
        consul_service: bool = True,
        max_conns_per_client: int | None = None,
        port: int = 0,
        session_ttl_min: float = 10.0,
    ) -> None:
        self._core = Core(tuple(datacenters), local_dc, acl_token, consul_service, jitter)
        for state in self._core.dcs.values():
            state.kv.sessions.ttl_min = session_ttl_min
        self._core.max_conns_per_client = max_conns_per_client
        self._ssl_context = ssl_context
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._transports: dict[RequestHandler, tuple[asyncio.Transport, str]] = {}
        self._startup_error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("ConsulDouble is not started")
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def local_dc(self) -> str:
        return self._core.local_dc

    @property
    def acl_token(self) -> str | None:
        return self._core.acl_token

    @property
    def jitter(self) -> bool:
        return self._core.jitter

    @jitter.setter
    def jitter(self, value: bool) -> None:
        self._core.jitter = value

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ConsulDouble already started")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="consul-double", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("ConsulDouble failed to start") from self._startup_error

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> ConsulDouble:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to start() in the caller's thread
            self._startup_error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        app = web.Application(middlewares=[middleware], client_max_size=4 * 1024 * 1024)
        app[CORE] = self._core
        app.add_routes(endpoints_catalog.routes)
        app.add_routes(endpoints_agent.routes)
        app.add_routes(endpoints_kv.routes)
        app.add_routes(endpoints_session.routes)
        # handler_cancellation: a client that gives up on a blocking query frees its slot,
        # so the in-flight gauge reflects what clients really hold open.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        self._runner = runner
        self._hook_connections(runner)
        self._core.loop = asyncio.get_running_loop()
        await self._listen(self._requested_port)

    def _hook_connections(self, runner: web.AppRunner) -> None:
        """Count TCP connections (per client IP) via aiohttp's per-connection callbacks."""
        server = runner.server
        assert server is not None
        made, lost = server.connection_made, server.connection_lost
        core = self._core

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if peer else ""
            made(handler, transport)
            if core.admit_connection(client):
                self._transports[handler] = (transport, client)
            else:
                # Consul's http_max_conns_per_client: excess connections are closed at once.
                transport.close()

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            entry = self._transports.pop(handler, None)
            if entry is not None:
                core.connection_closed(entry[1])
            lost(handler, exc)

        setattr(server, "connection_made", connection_made)  # noqa: B010
        setattr(server, "connection_lost", connection_lost)  # noqa: B010

    async def _listen(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        assert self._runner is not None and self._runner.server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._runner.server, sock=sock, ssl=self._ssl_context, backlog=4096
        )
        self._port = sock.getsockname()[1]

    async def _unlisten(self, drop_existing: bool) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if drop_existing:
            for transport, _ in list(self._transports.values()):
                transport.abort()

    async def _shutdown(self) -> None:
        await self._unlisten(drop_existing=True)
        with self._core.lock:
            self._core.hang_prefix = None
            event, self._core.hang_event = self._core.hang_event, None
        if event is not None:
            event.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _in_loop(self, factory: Callable[[], Awaitable[T]]) -> T:
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError("ConsulDouble is not started")
        if threading.current_thread() is self._thread:
            raise RuntimeError("this control method cannot be called from the server thread")

        async def call() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)

    # -- fault injection --------------------------------------------------------------------

    def fail(
        self,
        status: int = 500,
        body: str = "consul double: injected failure",
        count: int | None = None,
        *,
        path_prefix: str = "",
    ) -> None:
        """Answer the next `count` requests (all until heal() if None) with status and body."""
        with self._core.lock:
            self._core.fail_rule = FailRule(status, body, count, path_prefix)

    def hang(self, path_prefix: str = "") -> None:
        """Accept requests (connections stay open) but answer none until heal()."""
        with self._core.lock:
            if self._core.hang_event is None:
                self._core.hang_event = asyncio.Event()
            self._core.hang_prefix = path_prefix

    def refuse_connections(self, drop_existing: bool = True) -> None:
        """Close the listening socket (new connections are refused); by default also drop the
        open connections, like an agent that went away."""
        self._in_loop(lambda: self._unlisten(drop_existing))

    def accept_connections(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            self._in_loop(lambda: self._listen(self.port))

    def reset_index(self, to: int = 1, dc: str | None = None) -> None:
        """Move indexes backwards to `to` (a restored older snapshot): the Raft index and every
        stored index are clamped, and running blocking queries return at once with it."""
        names = [dc] if dc is not None else list(self._core.dcs)
        with self._core.lock:
            for name in names:
                self._core.state(name).reset_index(to)
            self._core.wake_all()
            self._core.changed()

    def lose_leader(self) -> None:
        """KnownLeader false; writes and non-stale reads fail with 500 No cluster leader."""
        with self._core.lock:
            self._core.has_leader = False
            self._core.changed()

    def restore_leader(self) -> None:
        with self._core.lock:
            self._core.has_leader = True
            self._core.changed()

    def heal(self) -> None:
        """Clear every injected fault: failures, hangs (hung requests proceed), refused
        connections and a lost leader."""
        with self._core.lock:
            self._core.fail_rule = None
            self._core.hang_prefix = None
            event, self._core.hang_event = self._core.hang_event, None
            self._core.has_leader = True
            self._core.changed()
        loop = self._loop
        if event is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self.accept_connections()

    # -- catalog control --------------------------------------------------------------------

    def register(
        self,
        service: str,
        address: str,
        port: int,
        *,
        id: str | None = None,
        node: str = "node1",
        node_address: str = "127.0.0.1",
        tags: Iterable[str] = (),
        meta: Mapping[str, str] | None = None,
        weights: Mapping[str, int] | None = None,
        status: str | None = "passing",
        dc: str | None = None,
        tagged_addresses: TaggedAddresses | None = None,
        node_meta: Mapping[str, str] | None = None,
        serf_health: bool = True,
        locality: Mapping[str, str] | None = None,
    ) -> str:
        """Register (or update) one instance in one write, like PUT /v1/catalog/register.

        The node gets lan/wan tagged addresses and a passing `serfHealth` check (as a node
        running an agent has); the instance gets a check `service:<id>` with `status`
        (none when status is None). The default ID is "<service>-<address>-<port>" so several
        instances on one node do not replace each other. Returns the service ID.
        """
        service_id = id or f"{service}-{address}-{port}"
        check_status = validate_status(status) if status is not None else None
        service_weights = decode_weights(dict(weights) if weights else None, strict=True)
        tagged = decode_tagged_addresses(
            {
                k: ({"Address": v[0], "Port": v[1]} if isinstance(v, tuple) else dict(v))
                for k, v in (tagged_addresses or {}).items()
            }
        )
        with self._core.write(dc) as state:
            index = state.raft.next_index()
            catalog = state.catalog
            catalog.ensure_node(
                index,
                Node(
                    name=node,
                    address=node_address,
                    datacenter=state.name,
                    id=node_id_for(state.name, node),
                    tagged_addresses={"lan": node_address, "wan": node_address},
                    meta=dict(node_meta) if node_meta is not None else {},
                ),
            )
            if serf_health and SERF_CHECK_ID not in catalog.checks[node]:
                catalog.ensure_check(index, serf_check(node))
            catalog.ensure_service(
                index,
                Service(
                    node=node,
                    id=service_id,
                    name=service,
                    tags=list(tags),
                    address=address,
                    port=port,
                    tagged_addresses=tagged,
                    meta=dict(meta or {}),
                    weights=service_weights,
                    locality=decode_locality(dict(locality)) if locality is not None else None,
                ),
            )
            if check_status is not None:
                catalog.ensure_check(
                    index,
                    Check(
                        node=node,
                        check_id=f"service:{service_id}",
                        name=f"Service '{service}' check",
                        status=check_status,
                        service_id=service_id,
                    ),
                )
        return service_id

    def register_sidecar(
        self,
        service_id: str,
        port: int | None = None,
        *,
        address: str = "",
        upstreams: Iterable[Mapping[str, Any]] = (),
        status: str = "passing",
        node: str | None = None,
        dc: str | None = None,
    ) -> str:
        """Register a Connect sidecar for an instance, as its agent does for a nested
        `connect.sidecar_service` (ID `<id>-sidecar-proxy`, name `<service>-sidecar-proxy`,
        Kind connect-proxy, Proxy naming the instance, the instance's tags, meta and weights).

        Its checks: "Connect Sidecar Listening" with `status`, and an alias check of the
        instance, which follows the instance's checks. `port` None: the next free one from
        21000; `address` "": the instance's. `upstreams` are Consul's Upstreams entries
        (`DestinationName`, `LocalBindPort`, `LocalBindAddress`). Returns the sidecar's ID.
        """
        status = validate_status(status)
        with self._core.write(dc) as state:
            owner = self._find_node(state, service_id, node)
            parent = state.catalog.services[owner][service_id]
            raw: dict[str, Any] = {
                "Address": address or parent.address,
                "Proxy": {"Upstreams": [dict(u) for u in upstreams] or None},
            }
            if port is not None:
                raw["Port"] = port
            # The default checks: the TCP one (given `status`) and the alias check.
            sidecar, checks = decode_sidecar_service(parent, raw, state.catalog)
            index = state.raft.next_index()
            state.catalog.ensure_service(index, sidecar)
            for check in checks:
                if check.type == "tcp":
                    check.status = status
                state.catalog.ensure_check(index, check)
        return sidecar.id

    def connect_health(self, name: str, dc: str | None = None) -> list[dict[str, Any]]:
        """The body /v1/health/connect/<name> would answer now (no filters)."""
        with self._core.lock:
            return self._core.state(dc).catalog.health_entries(name, connect=True)

    def _find_node(self, state: DatacenterState, service_id: str, node: str | None) -> str:
        if node is not None:
            if service_id not in state.catalog.services.get(node, {}):
                raise KeyError(f"no service {service_id!r} on node {node!r}")
            return node
        owners = [n for n, per_node in state.catalog.services.items() if service_id in per_node]
        if len(owners) != 1:
            raise KeyError(f"service ID {service_id!r} is on nodes {owners!r}; pass node=")
        return owners[0]

    def deregister(
        self, service_id: str, *, node: str | None = None, dc: str | None = None
    ) -> None:
        """Remove one instance and its checks (node=None: the only node that has the ID)."""
        with self._core.write(dc) as state:
            owner = self._find_node(state, service_id, node)
            state.catalog.delete_service(state.raft.next_index(), owner, service_id)

    def deregister_check(self, check_id: str, *, node: str, dc: str | None = None) -> None:
        """Remove one check (what PUT /v1/catalog/deregister with a CheckID does)."""
        with self._core.write(dc) as state:
            state.catalog.delete_check(state.raft.next_index(), node, check_id)

    def deregister_node(self, node: str, *, dc: str | None = None) -> None:
        with self._core.write(dc) as state:
            state.catalog.delete_node(state.raft.next_index(), node)

    def set_check(
        self,
        check_or_service_id: str,
        status: str,
        *,
        node: str | None = None,
        output: str = "",
        dc: str | None = None,
    ) -> None:
        """Set a check's status by check ID, or every check of a service instance by its ID."""
        status = validate_status(status)
        with self._core.write(dc) as state:
            catalog = state.catalog
            targets = [
                (n, check_or_service_id)
                for n, checks in catalog.checks.items()
                if (node is None or n == node) and check_or_service_id in checks
            ]
            if not targets:
                targets = [
                    (n, cid)
                    for n, checks in catalog.checks.items()
                    if node is None or n == node
                    for cid, chk in checks.items()
                    if chk.service_id == check_or_service_id and chk.type != "maintenance"
                ]
            if not targets:
                raise KeyError(f"no check or service instance {check_or_service_id!r}")
            index = state.raft.next_index()
            for n, cid in targets:
                catalog.update_check(index, n, cid, status=status, output=output)

    def set_node_health(self, node: str, status: str, *, dc: str | None = None) -> None:
        """Set a node's serfHealth check (all instances on it follow, as in Consul)."""
        self.set_check(SERF_CHECK_ID, status, node=node, dc=dc)

    def set_maintenance(
        self,
        service_id: str,
        enabled: bool,
        *,
        reason: str = "",
        node: str | None = None,
        dc: str | None = None,
    ) -> None:
        """Add/remove the critical `_service_maintenance:<id>` check, as the agent endpoint."""
        with self._core.write(dc) as state:
            owner = self._find_node(state, service_id, node)
            set_service_maintenance(
                state.catalog, state.raft.next_index(), owner, service_id, enabled, reason
            )

    def set_node_maintenance(
        self, node: str, enabled: bool, *, reason: str = "", dc: str | None = None
    ) -> None:
        with self._core.write(dc) as state:
            set_node_maintenance(state.catalog, state.raft.next_index(), node, enabled, reason)

    def seed(
        self,
        services: int = 2000,
        instances: int = 5,
        *,
        prefix: str = "svc",
        nodes: int | None = None,
        status: str = "passing",
        tags: Iterable[str] = (),
        dc: str | None = None,
    ) -> list[str]:
        """Register `services` x `instances` quickly (one Raft write) and return the names.

        Services are `<prefix>-00000`..; instance j of service i has ID `<name>-<j>` and lives
        on node `<prefix>-node-<k>` with k = (i*instances + j) % nodes (default: about ten
        instances per node), node address 10.x.y.z, its own port, a `service:<id>` check with
        `status` and the node's passing serfHealth.
        """
        n_nodes = nodes or max(instances, (services * instances + 9) // 10)
        tag_list = list(tags)
        status = validate_status(status)
        names = [f"{prefix}-{i:05d}" for i in range(services)]
        with self._core.write(dc) as state:
            catalog = state.catalog
            index = state.raft.next_index()
            node_names = []
            for k in range(n_nodes):
                name = f"{prefix}-node-{k:05d}"
                address = f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"
                node_names.append((name, address))
                catalog.ensure_node(
                    index,
                    Node(
                        name=name,
                        address=address,
                        datacenter=state.name,
                        id=node_id_for(state.name, name),
                        tagged_addresses={"lan": address, "wan": address},
                        meta={},
                    ),
                )
                catalog.ensure_check(index, serf_check(name))
            for i, name in enumerate(names):
                for j in range(instances):
                    slot = i * instances + j
                    node_name, address = node_names[slot % n_nodes]
                    service_id = f"{name}-{j}"
                    catalog.ensure_service(
                        index,
                        Service(
                            node=node_name,
                            id=service_id,
                            name=name,
                            tags=list(tag_list),
                            address=address,
                            port=20000 + slot // n_nodes,
                        ),
                    )
                    catalog.ensure_check(
                        index,
                        Check(
                            node=node_name,
                            check_id=f"service:{service_id}",
                            name=f"Service '{name}' check",
                            status=status,
                            service_id=service_id,
                        ),
                    )
        return names

    # -- KV control -------------------------------------------------------------------------

    def kv_put(
        self, key: str, value: bytes | str | None, *, flags: int = 0, dc: str | None = None
    ) -> int:
        """Set a key (like PUT /v1/kv/<key>); returns its new ModifyIndex."""
        data = value.encode() if isinstance(value, str) else value
        with self._core.write(dc) as state:
            return state.kv.set(state.raft.next_index(), key, data or None, flags).modify_index

    def kv_get(self, key: str, *, dc: str | None = None) -> bytes | None:
        """The key's value (None when missing or stored empty)."""
        with self._core.lock:
            entry = self._core.state(dc).kv.get(key)
            return entry.value if entry is not None else None

    def kv_entry(self, key: str, *, dc: str | None = None) -> dict[str, Any] | None:
        """The key as GET /v1/kv/<key> renders it (one object), or None."""
        with self._core.lock:
            entry = self._core.state(dc).kv.get(key)
            return entry.to_json() if entry is not None else None

    def kv_delete(self, key: str, *, recurse: bool = False, dc: str | None = None) -> None:
        with self._core.write(dc) as state:
            index = state.raft.next_index()
            if recurse:
                state.kv.delete_tree(index, key)
            else:
                state.kv.delete(index, key)

    def kv_writes(self, prefix: str, dc: str | None = None) -> int:
        """Writes (KV PUTs and write transactions) that touched a key under ``prefix``."""
        with self._core.lock:
            log = self._core.state(dc).kv.write_log
            return sum(1 for keys in log if any(k.startswith(prefix) for k in keys))

    def sessions(self, dc: str | None = None) -> list[dict[str, Any]]:
        """The live sessions, as GET /v1/session/list renders them."""
        with self._core.lock:
            table = self._core.state(dc).kv.sessions.sessions
            return [s.to_json() for s in sorted(table.values(), key=lambda s: s.create_index)]

    # -- reading state ----------------------------------------------------------------------

    def index(self, dc: str | None = None) -> int:
        """The datacenter's Raft index (bumped by every write)."""
        with self._core.lock:
            return self._core.state(dc).raft.index

    def service_index(self, name: str, dc: str | None = None) -> int:
        """The X-Consul-Index /v1/health/service/<name> would answer now."""
        with self._core.lock:
            return max(self._core.state(dc).catalog.service_index(name), 1)

    def health(self, name: str, dc: str | None = None) -> list[dict[str, Any]]:
        """The body /v1/health/service/<name> would answer now (no filters)."""
        with self._core.lock:
            return self._core.state(dc).catalog.health_entries(name)

    def services(self, dc: str | None = None) -> dict[str, list[str]]:
        """The body /v1/catalog/services would answer now."""
        with self._core.lock:
            return self._core.state(dc).catalog.service_tags()

    # -- instrumentation --------------------------------------------------------------------

    def request_count(self, path_prefix: str = "", method: str | None = None) -> int:
        with self._core.lock:
            return self._core.stats.count(path_prefix, method)

    def bytes_sent(self, path_prefix: str = "") -> int:
        """Response body bytes sent for paths under `path_prefix` (since start or reset_stats)."""
        with self._core.lock:
            return self._core.stats.bytes_for(path_prefix)

    def requests(self, path_prefix: str = "") -> list[RecordedRequest]:
        """Recorded requests (the last 100 000), oldest first."""
        with self._core.lock:
            return [r for r in self._core.stats.requests if r.path.startswith(path_prefix)]

    @property
    def tokens_seen(self) -> Counter[str | None]:
        """How many requests carried each token (None: no token)."""
        with self._core.lock:
            return Counter(self._core.stats.tokens_seen)

    @property
    def inflight(self) -> int:
        with self._core.lock:
            return self._core.stats.inflight

    @property
    def max_inflight(self) -> int:
        """Most requests ever being handled at once (blocked queries included)."""
        with self._core.lock:
            return self._core.stats.max_inflight

    @property
    def max_inflight_by_client(self) -> dict[str, int]:
        with self._core.lock:
            return dict(self._core.stats.max_inflight_by_client)

    @property
    def connections(self) -> int:
        """Open TCP (or TLS) connections now."""
        with self._core.lock:
            return self._core.stats.connections

    @property
    def max_connections(self) -> int:
        with self._core.lock:
            return self._core.stats.max_connections

    @property
    def max_connections_by_client(self) -> dict[str, int]:
        with self._core.lock:
            return dict(self._core.stats.max_connections_by_client)

    @property
    def rejected_connections(self) -> int:
        """Connections closed on accept because of `max_conns_per_client`."""
        with self._core.lock:
            return self._core.stats.rejected_connections

    @property
    def total_connections(self) -> int:
        """Connections accepted since start (or reset_stats)."""
        with self._core.lock:
            return self._core.stats.total_connections

    def inflight_count(self, path_prefix: str = "") -> int:
        with self._core.lock:
            return sum(
                n for p, n in self._core.stats.inflight_by_path.items() if p.startswith(path_prefix)
            )

    def blocked_count(self, path_prefix: str = "") -> int:
        """Requests currently parked in a blocking wait under `path_prefix`."""
        with self._core.lock:
            return sum(
                n for p, n in self._core.stats.blocked_by_path.items() if p.startswith(path_prefix)
            )

    def reset_stats(self) -> None:
        with self._core.lock:
            self._core.stats.reset()

    # -- waiting (events, not sleeps) -------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block the calling thread until predicate() holds. Raises TimeoutError.

        The predicate is re-checked (under the double's lock) whenever the double's state or
        stats change, so it must depend on those (request counts, catalog, KV...), not on
        things outside the double. In async code use `wait_for_async`."""
        if not self._core.wait_for(predicate, timeout):
            raise TimeoutError(f"condition not met within {timeout}s")

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        if not await self._core.wait_for_async(predicate, timeout):
            raise TimeoutError(f"condition not met within {timeout}s")

    def wait_for_requests(
        self, path_prefix: str, n: int = 1, *, method: str | None = None, timeout: float = 10.0
    ) -> None:
        """Until at least `n` requests under `path_prefix` have arrived (since reset_stats)."""
        self.wait_for(lambda: self.request_count(path_prefix, method) >= n, timeout)

    async def wait_for_requests_async(
        self, path_prefix: str, n: int = 1, *, method: str | None = None, timeout: float = 10.0
    ) -> None:
        await self.wait_for_async(lambda: self.request_count(path_prefix, method) >= n, timeout)

    def wait_for_blocked(self, path_prefix: str, n: int = 1, *, timeout: float = 10.0) -> None:
        """Until at least `n` blocking queries under `path_prefix` are parked waiting."""
        self.wait_for(lambda: self.blocked_count(path_prefix) >= n, timeout)

    async def wait_for_blocked_async(
        self, path_prefix: str, n: int = 1, *, timeout: float = 10.0
    ) -> None:
        await self.wait_for_async(lambda: self.blocked_count(path_prefix) >= n, timeout)
