"""The event log: what happens in the control plane, numbered, for ``/v1/events``.

The wiring publishes into an :class:`EventLog`: config revisions, snapshot builds, proxies
connecting and disconnecting, ACKs and NACKs, registry errors and recoveries. Each event gets
the next id (1, 2, 3 …); the log keeps the latest ``capacity`` events so a client that
reconnects with ``Last-Event-ID`` receives exactly the events it missed. The admin API
streams it (``admin/routes/events.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final


class EventType(StrEnum):
    """Every event type, in the order of the documentation."""

    REVISION = "revision"
    SNAPSHOT = "snapshot"
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    ACK = "ack"
    NACK = "nack"
    SOURCE_READY = "source_ready"
    SOURCE_ERROR = "source_error"
    SOURCE_RECOVERED = "source_recovered"
    MESH_CA_READY = "mesh_ca_ready"
    MESH_CA_ROTATION = "mesh_ca_rotation"
    MESH_CA_ERROR = "mesh_ca_error"
    MESH_IDENTITY_ISSUED = "mesh_identity_issued"
    MESH_IDENTITY_REMOVED = "mesh_identity_removed"


DEFAULT_CAPACITY: Final = 1000


def rfc3339(seconds: float) -> str:
    """Wall-clock seconds as RFC 3339, UTC, milliseconds (like the store's timestamps)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: EventType
    #: Wall-clock seconds.
    at: float
    data: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        """``id``, ``type`` and ``time`` first; data cannot override them."""
        entry: dict[str, Any] = {"id": self.id, "type": self.type.value, "time": rfc3339(self.at)}
        entry.update((key, value) for key, value in self.data.items() if key not in entry)
        return entry

    def frame(self) -> bytes:
        """The event as one ``text/event-stream`` frame (HTML living standard)."""
        body = json.dumps(self.as_json(), separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.type.value}\ndata: {body}\n\n".encode()


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

    def publish(self, type_: EventType, **data: Any) -> Event:
        event = Event(next(self._ids), EventType(type_), time.time(), data)
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
