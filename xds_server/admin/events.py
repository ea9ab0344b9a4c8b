"""``GET /v1/events``: what happens in the control plane, as server-sent events.

The wiring publishes into an :class:`EventLog`: config revisions, snapshot builds, proxies
connecting and disconnecting, ACKs and NACKs, registry errors and recoveries. Each event gets
the next id (1, 2, 3 …); the log keeps the latest ``capacity`` events so a client that
reconnects with ``Last-Event-ID`` receives exactly the events it missed. A client whose id
is older than the oldest kept event is told so first (an ``event: gap`` without an id).

Frames follow the HTML living standard's ``text/event-stream``::

    id: 42
    event: nack
    data: {"id": 42, "type": "nack", "time": "…", "node_id": "edge-1", …}

A new connection without ``Last-Event-ID`` starts at the live tail; ``?since=0`` replays
the buffer. A comment (``: …``) opens every stream (a client knows it is subscribed once it
arrives) and keeps an idle one alive.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Query
from starlette.responses import Response, StreamingResponse

from xds_server.admin import responses as docs
from xds_server.admin.problem import ApiError, item

EVENT_STREAM: Final = "text/event-stream"
#: Every event type, in the order of the documentation.
EVENT_TYPES: Final[tuple[str, ...]] = (
    "revision",
    "snapshot",
    "connect",
    "disconnect",
    "ack",
    "nack",
    "source_ready",
    "source_error",
    "source_recovered",
)
DEFAULT_CAPACITY: Final = 1000
#: An idle stream gets a comment this often, so proxies in between keep it open.
KEEPALIVE_SECONDS: Final = 15.0


def rfc3339(seconds: float) -> str:
    """Wall-clock seconds as RFC 3339, UTC, milliseconds (like the store's timestamps)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    #: Wall-clock seconds.
    at: float
    data: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        """``id``, ``type`` and ``time`` first; data cannot override them."""
        entry: dict[str, Any] = {"id": self.id, "type": self.type, "time": rfc3339(self.at)}
        entry.update((key, value) for key, value in self.data.items() if key not in entry)
        return entry

    def frame(self) -> bytes:
        body = json.dumps(self.as_json(), separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.type}\ndata: {body}\n\n".encode()


class EventLog:
    """A bounded, numbered log of events with async waits for new ones.

    Used from the event loop only. ``publish`` is synchronous and cheap, so any part of the
    wiring can call it from a callback.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._ids = itertools.count(1)
        self._last_id = 0
        #: Resolved by the next publish; made only when a stream waits, so publishing costs
        #: nothing extra while nobody listens.
        self._changed: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def first_id(self) -> int:
        """The id of the oldest event kept (``last_id + 1`` when none is)."""
        return self._events[0].id if self._events else self._last_id + 1

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, type_: str, **data: Any) -> Event:
        event = Event(next(self._ids), type_, time.time(), data)
        self._last_id = event.id
        self._events.append(event)
        self._wake()
        return event

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def after(self, cursor: int) -> list[Event]:
        """Every kept event with an id above ``cursor``, oldest first."""
        if cursor >= self._last_id or not self._events:
            return []
        skip = max(0, cursor - self._events[0].id + 1)
        return list(itertools.islice(self._events, skip, None))

    def missed(self, cursor: int) -> bool:
        """Whether events after ``cursor`` were dropped (or ``cursor`` is from an earlier
        run of the server, whose ids were higher)."""
        return cursor + 1 < self.first_id or cursor > self._last_id

    async def wait(self, cursor: int, timeout: float) -> None:
        """Return once there is an event after ``cursor``, the log closes, or ``timeout``."""
        if self._last_id > cursor or self._closed:
            return
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._changed), timeout)
        except TimeoutError:
            return

    def close(self) -> None:
        """End every stream (at shutdown: an open stream would hold the server up)."""
        self._closed = True
        self._wake()


def parse_types(text: str | None) -> frozenset[str] | None:
    if text is None or not text.strip():
        return None
    wanted = frozenset(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        reason = f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}"
        raise ApiError(
            422,
            "invalid-request",
            f"invalid request parameters: query.types: {reason}",
            [item("query.types", reason)],
            title="Invalid request",
        )
    return wanted


def parse_cursor(header: str | None, since: int | None, log: EventLog) -> int:
    if header is not None and header.strip():
        try:
            value = int(header.strip())
        except ValueError:
            reason = "expected an event id (an integer) as sent in an event's id field"
            raise ApiError(
                422,
                "invalid-request",
                f"invalid request parameters: header.last-event-id: {reason}",
                [item("header.last-event-id", reason)],
                title="Invalid request",
            ) from None
        return max(value, 0)
    if since is not None:
        return since
    return log.last_id


async def event_stream(
    log: EventLog,
    cursor: int,
    types: frozenset[str] | None,
    keepalive: float = KEEPALIVE_SECONDS,
) -> AsyncIterator[bytes]:
    yield f": events after {cursor}\n\n".encode()
    if log.missed(cursor):
        gap = {"requested_after": cursor, "first_available": log.first_id}
        yield f"event: gap\ndata: {json.dumps(gap)}\n\n".encode()
        if cursor > log.last_id:
            cursor = 0
    while True:
        events = log.after(cursor)
        if events:
            cursor = events[-1].id
            frames = [e.frame() for e in events if types is None or e.type in types]
            if frames:
                yield b"".join(frames)
            continue
        if log.closed:
            return
        await log.wait(cursor, keepalive)
        if log.last_id <= cursor and not log.closed:
            yield b": keepalive\n\n"


#: One event of the stream (the schema of each frame, as OpenAPI 3.2's ``itemSchema`` has it).
_EVENT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "Absent on `gap`."},
        "event": {"type": "string", "enum": [*EVENT_TYPES, "gap"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object"},
            "description": "JSON: `id`, `type`, `time` (RFC 3339) and the event's fields.",
        },
    },
}


def _closed_log() -> EventLog:
    log = EventLog(capacity=1)
    log.close()
    return log


def events_router(log: EventLog | None) -> APIRouter:
    """The router over ``log``; without one (an admin app with no event feed wired in), every
    stream ends at once."""
    source = log if log is not None else _closed_log()
    router = APIRouter(tags=["events"])

    @router.get(
        "/v1/events",
        operation_id="stream_events",
        summary="Server-sent events: revisions, snapshots, proxies, ACK/NACK, registry",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "A text/event-stream of events (`id:`, `event:`, `data:` JSON)."
                " Event types: " + ", ".join(EVENT_TYPES) + ". An `event: gap` (without id) "
                "says that events after Last-Event-ID are no longer kept.",
                "content": {EVENT_STREAM: {"schema": _EVENT_SCHEMA}},
            },
            **docs.problems(),
        },
    )
    async def stream_events(
        types: Annotated[
            str | None,
            Query(description="Only these event types, comma-separated (e.g. nack,ack)."),
        ] = None,
        since: Annotated[
            int | None,
            Query(
                ge=0,
                le=2**62,
                description="Start after this event id (0: everything kept); Last-Event-ID "
                "wins when both are sent. Without either, only new events.",
            ),
        ] = None,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                description="The id of the last event received: resume right after it.",
            ),
        ] = None,
    ) -> Response:
        wanted = parse_types(types)
        cursor = parse_cursor(last_event_id, since, source)
        return StreamingResponse(
            event_stream(source, cursor, wanted),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
