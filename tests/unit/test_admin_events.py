"""``/v1/events``: numbered server-sent events, resumable with ``Last-Event-ID``.

The admin app is served by uvicorn on a real socket (httpx's in-process transport buffers
whole responses, and an event stream never ends).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.support.sse import Frame, FrameParser
from tests.unit.admin_harness import assert_problem
from xds_server.admin.app import create_admin_app
from xds_server.admin.context import AdminContext
from xds_server.admin.routes.events import event_stream
from xds_server.admin.server import AdminServer
from xds_server.model import Inventory
from xds_server.status import EventLog, EventType
from xds_server.store import MemoryStore


class Reader:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = FrameParser()
        self.lines = response.aiter_lines()

    async def _frame(self) -> Frame:
        while True:
            frame = self.parser.feed(await anext(self.lines))
            if frame is not None:
                return frame

    async def frames(self, count: int, timeout: float = 5.0) -> list[Frame]:
        return [await asyncio.wait_for(self._frame(), timeout) for _ in range(count)]

    async def subscribed(self) -> None:
        while not self.parser.comments:
            frame = self.parser.feed(await asyncio.wait_for(anext(self.lines), 5))
            assert frame is None, "an event before the opening comment"


@asynccontextmanager
async def served(log: EventLog | None) -> AsyncIterator[httpx.AsyncClient]:
    store = MemoryStore()
    await store.open()
    app = create_admin_app(AdminContext(store=store, inventory=Inventory, events=log))
    server = AdminServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=10
        ) as client:
            yield client
    finally:
        if log is not None:
            log.close()
        await server.stop()
        await store.close()


@asynccontextmanager
async def subscribe(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **params: Any
) -> AsyncIterator[Reader]:
    async with client.stream("GET", "/v1/events", params=params, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = Reader(response)
        await reader.subscribed()
        yield reader


def publish(log: EventLog, count: int, type_: EventType = EventType.REVISION) -> list[int]:
    return [log.publish(type_, n=n).id for n in range(count)]


async def test_a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed() -> None:
    log = EventLog(capacity=100)
    # ``watcher`` stays connected throughout.
    async with served(log) as client, subscribe(client) as watcher:
        async with subscribe(client) as first:
            publish(log, 3)
            received = await first.frames(3)
        assert [f.id for f in received] == [1, 2, 3]
        assert [f.event for f in received] == ["revision"] * 3
        assert received[0].data == {
            "id": 1,
            "type": "revision",
            "time": received[0].data["time"],
            "n": 0,
        }
        publish(log, 4, EventType.SNAPSHOT)  # while the client is away
        async with subscribe(client, {"Last-Event-ID": str(received[-1].id)}) as again:
            missed = await again.frames(4)
            log.publish(EventType.NACK, marker=True)
            (next_one,) = await again.frames(1)
        everything = await watcher.frames(8)
    assert [f.id for f in missed] == [4, 5, 6, 7]
    assert [(f.id, f.event, f.data) for f in missed] == [
        (f.id, f.event, f.data) for f in everything[3:7]
    ]
    assert next_one.id == 8 and next_one.data["marker"] is True  # nothing repeated, nothing lost


async def test_events_no_longer_kept_are_reported_as_a_gap() -> None:
    log = EventLog(capacity=3)
    async with served(log) as client:
        publish(log, 10)
        async with subscribe(client, {"Last-Event-ID": "2"}) as late:
            gap, *kept = await late.frames(4)
    assert gap.event == "gap" and gap.id is None
    assert gap.data == {"requested_after": 2, "first_available": 8}
    assert [f.id for f in kept] == [8, 9, 10]


async def test_since_replays_the_buffer_and_types_filter() -> None:
    log = EventLog()
    async with served(log) as client:
        log.publish(EventType.ACK, node_id="a")
        log.publish(EventType.NACK, node_id="a", message="bad")
        log.publish(EventType.CONNECT, node_id="b")
        log.publish(EventType.NACK, node_id="b", message="worse")
        async with subscribe(client, since=0, types="nack,connect") as reader:
            frames = await reader.frames(3)
    assert [(f.id, f.event) for f in frames] == [(2, "nack"), (3, "connect"), (4, "nack")]
    assert frames[2].data["message"] == "worse"


async def test_a_new_client_starts_at_the_live_tail() -> None:
    log = EventLog()
    async with served(log) as client:
        publish(log, 5)
        async with subscribe(client) as reader:
            log.publish(EventType.DISCONNECT, node_id="x")
            (frame,) = await reader.frames(1)
    assert frame.id == 6 and frame.event == "disconnect"


async def test_bad_parameters_are_problems() -> None:
    async with served(EventLog()) as client:
        unknown = await client.get("/v1/events", params={"types": "nack,bogus"})
        problem = assert_problem(unknown, 422)
        assert problem["errors"][0]["field"] == "query.types"
        assert "bogus" in problem["errors"][0]["reason"]
        bad_id = await client.get("/v1/events", headers={"Last-Event-ID": "yesterday"})
        assert assert_problem(bad_id, 422)["errors"][0]["field"] == "header.last-event-id"


async def test_closing_the_log_ends_every_stream() -> None:
    log = EventLog()
    async with served(log) as client, subscribe(client) as reader:
        log.publish(EventType.REVISION, revision=1)
        log.close()
        (frame,) = await reader.frames(1)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(reader.lines), 5)
    assert frame.id == 1


async def test_an_app_without_an_event_feed_answers_an_empty_stream() -> None:
    async with served(None) as client:
        answer = await client.get("/v1/events")
    assert answer.status_code == 200
    assert answer.text.startswith(": events after 0")


def test_the_log_keeps_the_latest_events_with_increasing_ids() -> None:
    log = EventLog(capacity=3)
    assert log.after(0) == [] and not log.missed(0)
    ids = publish(log, 5)
    assert ids == [1, 2, 3, 4, 5]
    assert [e.id for e in log.after(0)] == [3, 4, 5]
    assert [e.id for e in log.after(3)] == [4, 5]
    assert log.after(5) == []
    assert log.missed(1) and not log.missed(2) and not log.missed(5)
    assert log.missed(9)  # an id of an earlier run of the server
    frame = log.after(4)[0].frame().decode()
    assert frame.startswith("id: 5\nevent: revision\ndata: {") and frame.endswith("}\n\n")


async def test_an_idle_stream_gets_keepalive_comments_then_events() -> None:
    log = EventLog()
    stream = event_stream(log, 0, None, keepalive=0.01)
    assert (await anext(stream)).startswith(b": events after 0\n\n")
    assert await anext(stream) == b": keepalive\n\n"
    log.publish(EventType.REVISION, revision=1)
    assert (await anext(stream)).startswith(b"id: 1\nevent: revision\ndata: {")
    log.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
