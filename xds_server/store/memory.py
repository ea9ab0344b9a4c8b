"""An in-memory ``ConfigStore`` for tests of the other parts (and for trying things out).

Same semantics as the SQLite store (the logic is shared in ``backend`` and ``planning``); its
"storage" survives ``close()`` and a later ``open()`` of the same object.
"""

from __future__ import annotations

from collections.abc import Iterable

from xds_server.store import planning
from xds_server.store.backend import BaseStore, Clock, StaleState
from xds_server.store.errors import StoreUnavailable
from xds_server.store.interface import ConfigState, HistoryEntry


class MemoryStore(BaseStore):
    def __init__(self, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self._saved = ConfigState.empty()
        self._log: list[HistoryEntry] = []  # commit order
        self._unavailable: str | None = None
        self._secrets: dict[str, str] = {}

    def set_unavailable(self, reason: str | None) -> None:
        """Fault injection: while ``reason`` is set, every write raises ``StoreUnavailable``."""
        self._unavailable = reason

    async def _backend_open(self) -> ConfigState:
        return self._saved

    async def _backend_close(self) -> None:
        pass

    async def _backend_write(self, planned: planning.Planned, base_revision: int) -> None:
        if self._unavailable is not None:
            raise StoreUnavailable(self._unavailable)
        if self._saved.revision != base_revision:
            raise StaleState(self._saved)
        self._log.extend(planned.entries)
        self._saved = planned.state

    async def _backend_history(self, query: planning.HistoryQuery) -> list[HistoryEntry]:
        return planning.take_page(self._newest_first(query), query.limit)

    def _newest_first(self, query: planning.HistoryQuery) -> Iterable[HistoryEntry]:
        end = len(self._log)
        while end > 0:  # revisions backwards, entries of one revision in commit order
            start = end - 1
            while start > 0 and self._log[start - 1].revision == self._log[end - 1].revision:
                start -= 1
            yield from (e for e in self._log[start:end] if query.matches(e))
            end = start

    async def _backend_entries_upto(self, revision: int) -> Iterable[HistoryEntry]:
        return [e for e in self._log if e.revision <= revision]

    async def _backend_get_secret(self, key: str) -> str | None:
        return self._secrets.get(key)

    async def _backend_put_secret(self, key: str, value: str, *, if_absent: bool) -> str:
        if self._unavailable is not None:
            raise StoreUnavailable(self._unavailable)
        if if_absent:
            return self._secrets.setdefault(key, value)
        self._secrets[key] = value
        return value

    async def _backend_secrets(self) -> dict[str, str]:
        return dict(sorted(self._secrets.items()))
