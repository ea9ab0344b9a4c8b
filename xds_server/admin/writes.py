"""Every write goes through here: plan it, validate the config it results in, then commit.

"Anything accepted, Envoy accepts": a write is planned with a store dry run (which also
checks ``If-Match`` and existence), the resulting config is validated, and only then is the
same write committed. Writes of this process are serialised by a lock, so nothing changes
between the check and the commit. (Another process writing the same SQLite file could still
slip in between; that is logged.)

A write is refused for the errors it *introduces*: an error the config already had (a
document stored by an older version that no longer parses) does not block unrelated writes.

Checking a state (parsing what changed, validating the whole config: about 100 ms at 5,000
routes) runs in a worker thread, so the event loop that also serves ADS streams stays free
meanwhile; the checker and its parser are safe to call from a thread (they only ever
publish finished results), and the write lock still serialises writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from xds_server.admin.checker import CheckedState, ConfigChecker
from xds_server.admin.context import Preview
from xds_server.model import Problem
from xds_server.runtime.gc_pause import gc_paused
from xds_server.store import Change, CommitResult, ConfigStore

log = logging.getLogger("xds_server.admin")

Outcome = Literal["created", "updated", "deleted", "unchanged"]
_OUTCOME_OF: dict[str, Outcome] = {"create": "created", "update": "updated", "delete": "deleted"}


class ValidationFailed(Exception):
    """The write would make the config invalid; ``problems`` are the errors it introduces."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    dry_run: bool
    before: CheckedState
    #: The config after the write (for a dry run: as it would be).
    after: CheckedState
    #: What was (or would be) committed; ``result.revision`` is the new revision.
    result: CommitResult
    #: What would change in Envoy; dry runs only.
    preview: dict[str, Any] | None = None
    _outcomes: dict[tuple[str, str], Outcome] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        # An apply asks for every document's outcome: one look-up each, not a scan.
        outcomes = self._outcomes
        for entry in self.result.changed:
            outcomes.setdefault((entry.kind, entry.name), _OUTCOME_OF[entry.operation])

    def outcome_of(self, kind: str, name: str) -> Outcome:
        return self._outcomes.get((kind, name), "unchanged")


class ConfigWriter:
    def __init__(self, store: ConfigStore, checker: ConfigChecker, preview: Preview) -> None:
        self._store = store
        self._checker = checker
        self._preview = preview
        self._lock = asyncio.Lock()

    async def commit(
        self, changes: Sequence[Change], actor: str, *, note: str | None = None, dry_run: bool
    ) -> WriteOutcome:
        async def run(dry: bool) -> CommitResult:
            return await self._store.commit(changes, actor, note=note, dry_run=dry)

        return await self._write(run, dry_run)

    async def rollback(
        self, revision: int, actor: str, *, note: str | None = None, dry_run: bool
    ) -> WriteOutcome:
        async def run(dry: bool) -> CommitResult:
            return await self._store.rollback(revision, actor, note=note, dry_run=dry)

        return await self._write(run, dry_run)

    async def _write(
        self, run: Callable[[bool], Awaitable[CommitResult]], dry_run: bool
    ) -> WriteOutcome:
        async with self._lock:
            with gc_paused():
                before = await asyncio.to_thread(self._checker.check, self._store.current())
            planned = await run(True)
            after = before
            if planned.changed:
                with gc_paused():
                    after = await asyncio.to_thread(self._checker.check, planned.state)
                introduced = after.report.introduced_since(before.report)
                if introduced.errors:
                    raise ValidationFailed(introduced.errors)
            if dry_run:
                preview = self._run_preview(before, after) if planned.changed else {}
                return WriteOutcome(True, before, after, planned, preview)
            if not planned.changed:
                return WriteOutcome(False, before, after, planned)
            result = await run(False)
            if result.revision != planned.revision:
                log.warning(
                    "another writer committed while revision %d was being written; the config "
                    "at revision %d was not validated as a whole",
                    planned.revision,
                    result.revision,
                )
                checked = await asyncio.to_thread(self._checker.check, result.state)
                return WriteOutcome(False, before, checked, result)
            return WriteOutcome(False, before, self._checker.adopt(result.state, after), result)

    def _run_preview(self, before: CheckedState, after: CheckedState) -> dict[str, Any]:
        try:
            return self._preview(before.config, after.config)
        except Exception as error:  # a translation bug must not hide the rest of the answer
            log.exception("dry run: the Envoy preview failed")
            return {"error": f"the Envoy preview failed: {error}"}
