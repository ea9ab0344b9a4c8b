"""``GET /v1/events``: the event log (``xds_server.status.EventLog``) as server-sent events.

A client that reconnects with ``Last-Event-ID`` receives exactly the events it missed; one
whose id is older than the oldest kept event is told so first (an ``event: gap`` without an
id).

Frames follow the HTML living standard's ``text/event-stream``::

    id: 42
    event: nack
    data: {"id": 42, "type": "nack", "time": "…", "node_id": "edge-1", …}

A new connection without ``Last-Event-ID`` starts at the live tail; ``?since=0`` replays
the buffer. A comment (``: …``) opens every stream (a client knows it is subscribed once it
arrives) and keeps an idle one alive.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, Query
from starlette.responses import Response, StreamingResponse

from xds_server.admin.openapi import responses as docs
from xds_server.admin.problem import ApiError, item
from xds_server.status import EventLog, EventType

EVENT_STREAM: Final = "text/event-stream"
#: Every event type, in the order of the documentation.
EVENT_TYPES: Final = tuple(event_type.value for event_type in EventType)
#: An idle stream gets a comment this often, so proxies in between keep it open.
KEEPALIVE_SECONDS: Final = 15.0


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


_STREAM_ANSWER: Final[dict[str, Any]] = {
    "description": "A text/event-stream of events (`id:`, `event:`, `data:` JSON). Event types: "
    + ", ".join(EVENT_TYPES)
    + ". An `event: gap` (without id) says that events after Last-Event-ID are no longer kept.",
    "content": {EVENT_STREAM: {"schema": _EVENT_SCHEMA}},
}
Types = Annotated[
    str | None, Query(description="Only these event types, comma-separated (e.g. nack,ack).")
]
Since = Annotated[
    int | None,
    Query(
        ge=0,
        le=2**62,
        description="Start after this event id (0: everything kept); Last-Event-ID wins when "
        "both are sent. Without either, only new events.",
    ),
]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="The id of the last event received: resume right after it.",
    ),
]


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
        responses={200: _STREAM_ANSWER, **docs.problems()},
    )
    async def stream_events(
        types: Types = None, since: Since = None, last_event_id: LastEventId = None
    ) -> Response:
        wanted = parse_types(types)
        cursor = parse_cursor(last_event_id, since, source)
        return StreamingResponse(
            event_stream(source, cursor, wanted),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
