"""Read ``/v1/events`` (server-sent events) the way a browser's EventSource would."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Frame:
    """One dispatched frame: ``id`` and ``event`` as sent (None when absent), ``data`` parsed."""

    id: int | None
    event: str
    data: dict[str, Any]


@dataclass
class FrameParser:
    """The event-stream grammar: ``field: value`` lines, a blank line dispatches, ``:``
    starts a comment."""

    comments: list[str] = field(default_factory=list)
    _fields: dict[str, str] = field(default_factory=dict)
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> Frame | None:
        if line == "":
            if not self._data:
                self._fields.clear()
                return None
            frame = Frame(
                int(self._fields["id"]) if "id" in self._fields else None,
                self._fields.get("event", "message"),
                json.loads("\n".join(self._data)),
            )
            self._fields.clear()
            self._data.clear()
            return frame
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        else:
            self._fields[name] = value
        return None


class EventStream:
    """An open ``/v1/events`` response; ``next_frame`` and ``until`` read with a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = FrameParser()
        self._lines: Iterator[str] = response.iter_lines()
        self.frames: list[Frame] = []

    def subscribed(self, timeout: float = 10.0) -> None:
        """Wait for the opening comment: from then on no event is missed."""
        deadline = time.monotonic() + timeout
        while not self.parser.comments:
            if time.monotonic() > deadline:
                raise TimeoutError("no opening comment on the event stream")
            frame = self.parser.feed(next(self._lines))
            if frame is not None:
                self.frames.append(frame)

    def next_frame(self, timeout: float = 20.0) -> Frame:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.parser.feed(next(self._lines))
            if frame is not None:
                self.frames.append(frame)
                return frame
        raise TimeoutError(f"no event within {timeout}s")

    def until(self, done: Callable[[Frame], bool], timeout: float = 20.0) -> list[Frame]:
        """Every frame read until (and including) the first for which ``done`` is true."""
        deadline = time.monotonic() + timeout
        read: list[Frame] = []
        while True:
            frame = self.next_frame(max(0.01, deadline - time.monotonic()))
            read.append(frame)
            if done(frame):
                return read


@contextmanager
def open_events(
    base_url: str,
    *,
    since: int | None = None,
    last_event_id: int | str | None = None,
    types: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Iterator[EventStream]:
    params: dict[str, str] = {}
    if since is not None:
        params["since"] = str(since)
    if types is not None:
        params["types"] = types
    sent = dict(headers or {})
    if last_event_id is not None:
        sent["Last-Event-ID"] = str(last_event_id)
    # The read timeout outlasts the server's keep-alive comments (every 15 s).
    timeout = httpx.Timeout(10.0, read=30.0)
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("GET", base_url + "/v1/events", params=params, headers=sent) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        stream.subscribed()
        yield stream
