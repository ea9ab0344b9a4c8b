"""Shared state of a running double: datacenters, faults, stats and waiting, behind one lock.

Threading model: the HTTP server runs in its own thread and event loop; tests call control
methods from any thread. Every read or write of state and stats holds `lock` (an RLock, so a
predicate evaluated under it may call back into the double). Writes collect the topics they
touched and hand them to the server loop with `call_soon_threadsafe`, which wakes blocking
queries. Test-side waits use a Condition (sync) or futures resolved in the waiter's own loop
(async), re-evaluated whenever state or stats change -- never a sleep loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from .blocking import WAKE_ALL, Notifier
from .decode import ConsulError
from .raft import Topic
from .state import DatacenterState
from .stats import RecordedRequest, Stats

__all__ = ["AGENT_ADDRESS", "AGENT_NODE", "Core", "FailRule"]

AGENT_NODE = "double-agent"
AGENT_ADDRESS = "127.0.0.1"


@dataclass
class FailRule:
    status: int
    body: str
    remaining: int | None  # None: until heal()
    path_prefix: str


@dataclass
class _AsyncWaiter:
    predicate: Callable[[], bool]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class Core:
    def __init__(
        self,
        datacenters: tuple[str, ...],
        local_dc: str,
        acl_token: str | None,
        consul_service: bool,
        jitter: bool,
    ) -> None:
        if local_dc not in datacenters:
            raise ValueError(f"local_dc {local_dc!r} is not one of {datacenters!r}")
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.local_dc = local_dc
        self.acl_token = acl_token
        self.jitter = jitter
        self.dcs: dict[str, DatacenterState] = {}
        for name in datacenters:
            state = DatacenterState(name)
            node = AGENT_NODE if name == local_dc else f"double-server-{name}"
            state.add_server_node(node, AGENT_ADDRESS, consul_service)
            state.raft.take_touched()
            self.dcs[name] = state
        self.loop: asyncio.AbstractEventLoop | None = None
        self.notifier = Notifier()
        self.stats = Stats()
        self.fail_rule: FailRule | None = None
        self.hang_prefix: str | None = None
        self.hang_event: asyncio.Event | None = None
        self.has_leader = True
        self.max_conns_per_client: int | None = None
        self._async_waiters: list[_AsyncWaiter] = []

    # -- datacenters and writes -------------------------------------------------------------

    def datacenter_names(self) -> list[str]:
        """Local first, then the others (Consul sorts by round-trip time)."""
        return [self.local_dc, *sorted(n for n in self.dcs if n != self.local_dc)]

    def state(self, dc: str | None) -> DatacenterState:
        state = self.dcs.get(dc or self.local_dc)
        if state is None:
            raise ConsulError(500, "No path to datacenter")
        return state

    @contextmanager
    def write(self, dc: str | None) -> Iterator[DatacenterState]:
        """Hold the lock for one write; afterwards wake whatever it touched."""
        with self.lock:
            state = self.state(dc)
            try:
                yield state
            finally:
                touched = state.raft.take_touched()
                if touched:
                    self.publish([(state.name, *t) for t in touched])
                self.changed()

    def publish(self, topics: list[Topic]) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self.notifier.publish, topics)

    def wake_all(self) -> None:
        self.publish([WAKE_ALL])

    # -- faults -----------------------------------------------------------------------------

    def take_failure(self, path: str) -> FailRule | None:
        with self.lock:
            rule = self.fail_rule
            if rule is None or not path.startswith(rule.path_prefix):
                return None
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self.fail_rule = None
            return rule

    def hang_for(self, path: str) -> asyncio.Event | None:
        with self.lock:
            if self.hang_prefix is not None and path.startswith(self.hang_prefix):
                return self.hang_event
            return None

    # -- stats ------------------------------------------------------------------------------

    def request_started(self, req: RecordedRequest) -> None:
        with self.lock:
            self.stats.request_started(req)
            self.changed()

    def request_finished(self, req: RecordedRequest, body_bytes: int = 0) -> None:
        with self.lock:
            self.stats.response_sent(req, body_bytes)
            self.stats.request_finished(req)
            self.changed()

    @contextmanager
    def blocked(self, path: str) -> Iterator[None]:
        with self.lock:
            self.stats.blocked_by_path[path] += 1
            self.changed()
        try:
            yield
        finally:
            with self.lock:
                self.stats.blocked_by_path[path] -= 1
                if self.stats.blocked_by_path[path] <= 0:
                    del self.stats.blocked_by_path[path]
                self.changed()

    def admit_connection(self, client: str) -> bool:
        """Count a new connection, or refuse it when the client is at its limit."""
        with self.lock:
            limit = self.max_conns_per_client
            if limit is not None and self.stats.connections_by_client[client] >= limit:
                self.stats.rejected_connections += 1
                admitted = False
            else:
                self.stats.connection_opened(client)
                admitted = True
            self.changed()
            return admitted

    def connection_closed(self, client: str) -> None:
        with self.lock:
            self.stats.connection_closed(client)
            self.changed()

    # -- waiting for conditions -------------------------------------------------------------

    def changed(self) -> None:
        """Re-evaluate waiters after any change of state or stats (caller holds the lock)."""
        with self.lock:
            self.cond.notify_all()
            if not self._async_waiters:
                return
            still: list[_AsyncWaiter] = []
            for waiter in self._async_waiters:
                if waiter.future.done():
                    continue
                try:
                    met = waiter.predicate()
                except Exception as exc:  # reported to the waiter, not to whoever changed state
                    with suppress(RuntimeError):
                        waiter.loop.call_soon_threadsafe(_fail, waiter.future, exc)
                    continue
                if met:
                    with suppress(RuntimeError):
                        waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
                else:
                    still.append(waiter)
            self._async_waiters = still

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self.lock:
            if predicate():
                return True
            self._async_waiters.append(_AsyncWaiter(predicate, loop, future))
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            with self.lock:
                return predicate()
