"""What every inventory source offers the app, and the status bookkeeping they share.

A source runs until cancelled and calls ``publish`` with a complete, immutable ``Inventory``
whenever what it knows changes. Transient failures never escape ``run``: the source keeps the
last good inventory, records the error in its status and logs one line per state change
(healthy → failing → recovered), not one per retry, so an outage does not flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from xds_server.model.inventory import Inventory

Publish = Callable[[Inventory], None]


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A point-in-time view of a source's health, for ``/readyz`` and metrics."""

    #: True once the first complete sync has been published; never goes back to false.
    ready: bool = False
    #: The current error, or None while the source is healthy.
    last_error: str | None = None
    #: ``time.monotonic()`` of the last successful exchange with the backend (None: never).
    last_contact: float | None = None
    #: Failed attempts since start (every failed request or load counts once).
    errors: int = 0


@runtime_checkable
class InventorySource(Protocol):
    """Keeps an ``Inventory`` current. Debouncing bursts is the caller's job."""

    async def run(self, publish: Publish) -> None:
        """Run until cancelled; call publish with a complete new Inventory on each change.

        Never raises on transient errors (logs state changes, keeps the last good inventory)
        and never publishes an inventory equal to the previous one.
        """
        ...

    @property
    def status(self) -> SourceStatus: ...


class StatusTracker:
    """Mutable status behind ``SourceStatus``, logging only transitions.

    Failures are recorded per *channel* (e.g. ``catalog dc1``, ``health dc1``): the source is
    failing while any channel fails. A line is logged when the first channel fails, when a
    failure of a new kind appears (an ACL denial after an outage, say) and when the last
    channel recovers, so a retry loop that keeps failing the same way stays silent.
    """

    def __init__(self, logger: logging.Logger, name: str) -> None:
        self._log = logger
        self._name = name
        self._ready = False
        self._failing: dict[str, str] = {}  # channel -> kind
        self._kinds_logged: set[str] = set()
        self._last_error: str | None = None
        self._last_contact: float | None = None
        self._errors = 0

    @property
    def status(self) -> SourceStatus:
        return SourceStatus(self._ready, self._last_error, self._last_contact, self._errors)

    @property
    def failing(self) -> bool:
        return bool(self._failing)

    def mark_ready(self) -> None:
        self._ready = True

    def contact(self) -> None:
        """A successful exchange happened (without clearing any channel's failure)."""
        self._last_contact = time.monotonic()

    def ok(self, channel: str) -> None:
        """``channel`` succeeded; log recovery when it was the last failing one."""
        self._last_contact = time.monotonic()
        if self._failing.pop(channel, None) is not None and not self._failing:
            self._log.info("%s: recovered after %d errors", self._name, self._errors)
            self._last_error = None
            self._kinds_logged.clear()

    def fail(self, channel: str, kind: str, message: str) -> None:
        """``channel`` failed with an error of ``kind`` (a short category) and ``message``."""
        self._errors += 1
        self._last_error = message
        self._failing[channel] = kind
        if kind not in self._kinds_logged:
            self._kinds_logged.add(kind)
            outcome = "keeping the last good inventory" if self._ready else "not ready"
            self._log.error("%s: %s (%s)", self._name, message, outcome)
