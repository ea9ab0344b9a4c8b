"""What every xDS stream shares: the node, the event loop, bookkeeping and limits.

A stream turns two inputs into responses: requests from the client and changes of the
snapshot cache. Both are funnelled into one queue so a stream is a single sequential loop
and never races with itself. Responses are the pre-serialised bytes built in
``xds_server.cache.encoding``; the gRPC method handlers pass them through unchanged.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import DecodeError

from xds_server.cache.clients import ClientType, client_type
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.snapshot_cache import CacheState, SnapshotCache
from xds_server.cache.types import PUSH_ORDER
from xds_server.server.errors import StreamError
from xds_server.server.inbox import Inbox
from xds_server.server.limits import NONCE_PATTERN, StreamLimits
from xds_server.server.subscription import TypeState
from xds_server.status import (
    Nack,
    ProxyEvent,
    ProxyEventKind,
    ProxyRegistry,
    ProxyStatus,
    StreamKind,
    TypeStatus,
)

log = logging.getLogger("xds_server.server")

Request = TypeVar("Request")

_CHANGED = object()
_END = object()
_stream_ids = itertools.count(1)
#: Nonces are unique across the streams that record into one registry, not per stream: a
#: node's record (``ProxyStatus``) is shared by all its streams, and a gRPC process opens one
#: ADS stream per channel target (gRFC A71), so a per-stream "1" would name several responses.
_nonce_counters: weakref.WeakKeyDictionary[ProxyRegistry, Iterator[int]] = (
    weakref.WeakKeyDictionary()
)


def _nonce_counter(registry: ProxyRegistry) -> Iterator[int]:
    counter = _nonce_counters.get(registry)
    if counter is None:
        counter = _nonce_counters[registry] = itertools.count(1)
    return counter


def envoy_version(node: Any) -> str:
    """Envoy's version from the node's build version (or its free-form user agent)."""
    build = node.user_agent_build_version
    if build.HasField("version"):
        v = build.version
        return f"{v.major_number}.{v.minor_number}.{v.patch}"
    return str(node.user_agent_version)


class XdsStream(abc.ABC, Generic[Request]):
    """One client stream; subclasses implement the SotW or delta rules."""

    kind: StreamKind

    def __init__(
        self,
        cache: SnapshotCache,
        registry: ProxyRegistry,
        limits: StreamLimits,
        types: tuple[str, ...],
        peer: str,
    ) -> None:
        self.cache = cache
        self.registry = registry
        self.limits = limits
        #: The types this stream serves: all of them on ADS, one on a per-type service.
        self.types = types
        self.peer = peer
        self.stream_id = next(_stream_ids)
        self.proxy: ProxyStatus | None = None
        self.node_id = ""
        self.group = ""
        #: ``node.locality.zone``: the stream is served its group's view from that zone.
        self.zone = ""
        #: A proxyless gRPC client is served the gRPC snapshot, not its group's.
        self.client = ClientType.ENVOY
        self.states: dict[str, TypeState] = {}
        self.generation = -1
        self._nonces = _nonce_counter(registry)
        self._outbox: list[bytes] = []

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, requests: AsyncIterator[Request]) -> AsyncIterator[bytes]:
        queue: Inbox[object] = Inbox()
        reader = asyncio.create_task(self._read(requests, queue))
        watcher = asyncio.create_task(self._watch(queue))
        try:
            if self.cache.state.generation == 0:
                # Nothing has been published yet (the first inventory sync is still running,
                # e.g. after a control-plane restart). Answering now would hand Envoy an empty
                # config and drop its traffic; requests wait in the queue instead.
                await self.cache.wait_for_change(0)
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if item is _CHANGED:
                    self._push(self.cache.state)
                else:
                    self._on_request(item)  # type: ignore[arg-type]
                # Idle streams keep nothing of their last request (thousands of names).
                item = None
                while self._outbox:
                    yield self._outbox.pop(0)
        finally:
            reader.cancel()
            watcher.cancel()
            if self.proxy is not None:
                self.registry.disconnect(self.proxy)

    async def _read(self, requests: AsyncIterator[Request], queue: Inbox[object]) -> None:
        try:
            async for request in requests:
                await queue.put(request)
                del request
        except asyncio.CancelledError:
            raise
        except DecodeError as exc:  # not a protobuf: the client's fault, not the transport's
            await queue.put(StreamError(grpc.StatusCode.INTERNAL, f"malformed request: {exc}"))
            return
        except Exception as exc:  # the transport failed: end the stream quietly
            log.debug("stream %d read ended: %s", self.stream_id, exc)
        await queue.put(_END)

    async def _watch(self, queue: Inbox[object]) -> None:
        """Wake the stream when its snapshot changes: on any change until the stream knows
        its proxy group, then only when that group's snapshot is replaced."""
        generation = self.cache.state.generation
        while self.proxy is None:
            state = await self.cache.wait_for_change(generation)
            generation = state.generation
            queue.put_nowait(_CHANGED)
        current = self.cache.state.snapshot_for(self.group, client=self.client)
        while True:
            state = await self.cache.wait_for_snapshot(self.group, current, self.client)
            current = state.snapshot_for(self.group, client=self.client)
            queue.put_nowait(_CHANGED)

    # -- shared rules -----------------------------------------------------------------------

    def _on_request(self, request: Request) -> None:
        self._check_node(request)
        type_url = self._type_url_of(request)
        self._check_limits(request)
        # Bring every type up to the newest snapshot first, so that an answer to this
        # request never overtakes a pending push of a type it depends on.
        state = self.cache.state
        if state.generation != self.generation:
            self._push(state)
        snapshot = state.snapshot_for(self.group, self.zone, self.client)
        self.handle(self.state_for(type_url), request, snapshot, state)

    def _type_url_of(self, request: Any) -> str:
        type_url = str(request.type_url)
        if not type_url and len(self.types) == 1:
            return self.types[0]
        if type_url not in self.types:
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"type_url {type_url[:200]!r} is not served on this stream",
            )
        return type_url

    def _check_node(self, request: Any) -> None:
        if self.proxy is not None:
            return
        if not request.HasField("node") or not request.node.id:
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry a node with an id"
            )
        node = request.node
        self.node_id = str(node.id)
        self.group = str(node.cluster)
        self.zone = str(node.locality.zone)
        self.client = client_type(node)
        self.proxy = self.registry.connect(
            self.node_id, self.group, self.peer, envoy_version(node), self.kind, node
        )
        log.info(
            "proxy connected node=%s group=%s peer=%s stream=%s client=%s",
            self.node_id,
            self.group,
            self.peer,
            self.kind.value,
            self.client.value,
        )

    def _check_limits(self, request: Any) -> None:
        names = self.names_in(request)
        if names > self.limits.max_resource_names:
            raise StreamError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request names {names} resources; at most {self.limits.max_resource_names}",
            )
        nonce = str(request.response_nonce)
        if nonce and not NONCE_PATTERN.fullmatch(nonce):
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "response_nonce is not ours")

    def state_for(self, type_url: str) -> TypeState:
        state = self.states.get(type_url)
        if state is None:
            assert self.proxy is not None
            status: TypeStatus = self.proxy.type_status(type_url)
            state = self.states[type_url] = TypeState(type_url, status)
        return state

    def next_nonce(self) -> str:
        return str(next(self._nonces))

    def _push(self, cache_state: CacheState) -> None:
        """Bring every subscribed type up to ``cache_state``, in make-before-break order."""
        self.generation = cache_state.generation
        if self.proxy is None:
            return
        snapshot = cache_state.snapshot_for(self.group, self.zone, self.client)
        started = [t for t in PUSH_ORDER if t in self.states and self.states[t].started]
        self.push(started, snapshot, cache_state)

    def record_send(
        self, state: TypeState, version: str, nonce: str, data: bytes, cache_state: CacheState
    ) -> None:
        status = state.status
        status.sent_version = version
        status.sent_nonce = nonce
        status.sent_at = time.time()
        status.sent_state_set_at = cache_state.set_at
        status.responses += 1
        status.bytes_sent += len(data)
        status.held = state.client_has
        state.nonce = nonce
        state.sent_version = version
        state.sent_set_at = cache_state.set_at
        self._outbox.append(data)
        self._emit(ProxyEventKind.SEND, state, version, sent_bytes=len(data))

    def record_held(self, state: TypeState, version: str) -> None:
        """The client already holds ``version`` of this type (a delta client reconnecting
        with every resource current): in sync without a response."""
        status = state.status
        status.sent_version = status.acked_version = version
        status.acked_at = time.time()
        status.held = state.client_has

    def record_reply(self, state: TypeState, request: Any, acked_version: str) -> None:
        """The client answered the last response of a type: a NACK if the request carries
        ``error_detail`` (of the version this stream sent), an ACK of ``acked_version``
        otherwise."""
        if request.HasField("error_detail"):
            self.record_nack(
                state, state.sent_version, state.nonce, str(request.error_detail.message)
            )
        else:
            self.record_ack(state, acked_version)

    def record_ack(self, state: TypeState, version: str) -> None:
        """Every ACK is an event; it updates the node's record only if it answers the
        response the record holds. Several streams of one node share the record (a gRPC
        process: one stream per channel target): the ACK of stream A's response, read after
        stream B sent a later one, must not pair A's version with B's send (the record
        would say STALE forever, though every stream is in sync)."""
        first_ack_of_send = state.acked_version != version
        state.acked_version = version
        convergence = None
        if first_ack_of_send and state.sent_set_at is not None:
            convergence = max(0.0, time.monotonic() - state.sent_set_at)
        status = state.status
        if status.sent_nonce == state.nonce:
            status.acked_version = version
            status.acked_at = time.time()
        self._emit(ProxyEventKind.ACK, state, version, convergence=convergence)

    def record_nack(self, state: TypeState, version: str, nonce: str, message: str) -> None:
        message = message[: self.limits.max_error_message]
        state.status.last_nack = Nack(version, nonce, message, time.time())
        log.warning(
            "NACK node=%s group=%s type=%s version=%s: %s",
            self.node_id,
            self.group,
            state.type_url.rsplit(".", 1)[-1],
            version,
            message,
        )
        self._emit(ProxyEventKind.NACK, state, version, message=message)

    def _emit(
        self,
        kind: ProxyEventKind,
        state: TypeState,
        version: str,
        *,
        message: str = "",
        convergence: float | None = None,
        sent_bytes: int = 0,
    ) -> None:
        self.registry.emit(
            ProxyEvent(
                kind,
                self.node_id,
                self.group,
                state.type_url,
                version,
                message,
                convergence,
                bytes=sent_bytes,
            )
        )

    # -- for subclasses ---------------------------------------------------------------------

    @abc.abstractmethod
    def names_in(self, request: Any) -> int:
        """How many resource names the request carries."""

    @abc.abstractmethod
    def handle(
        self, state: TypeState, request: Any, snapshot: Snapshot, cache_state: CacheState
    ) -> None:
        """Apply one request for ``state``'s type: ACK/NACK bookkeeping, subscription, and
        any answer."""

    @abc.abstractmethod
    def push(self, types: list[str], snapshot: Snapshot, cache_state: CacheState) -> None:
        """Send what changed in ``snapshot`` for ``types`` (already in push order)."""
