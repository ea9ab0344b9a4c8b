"""The embedded default store: one SQLite file.

- Durable: WAL with ``synchronous=FULL``, so a commit that returned survives a crash or
  ``kill -9``; one transaction per commit (``BEGIN IMMEDIATE`` takes the write lock up front).
- Private: the database and its ``-wal``/``-shm`` files are mode 0600 (they hold private keys);
  SQLite gives the side files the main file's mode.
- Off the event loop: sqlite3 blocks, so one connection lives in one dedicated thread and
  every call is queued to it; the asyncio loop serving gRPC never waits for the disk.
- Several processes may share the file: a commit checks the stored revision inside its
  transaction and is re-planned on the fresh state if another process wrote first. Changes
  made by another process are *not* watched; they show up at this process's next commit.
- The secret side channel (the mesh CA's root and key) is its own table, ``secrets``: outside
  revisions and history; ``put_secret_if_absent`` is one write transaction, so of two
  processes storing a root at once one wins and both read the winner's.
- Schema migrations are keyed by ``PRAGMA user_version``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from xds_server.store import planning
from xds_server.store.backend import BaseStore, Clock, StaleState
from xds_server.store.codec import canonical_json, load_spec, operation_of
from xds_server.store.errors import StoreError, StoreUnavailable
from xds_server.store.interface import ConfigState, Document, HistoryEntry, Spec

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Statements that take the schema from version ``n - 1`` to ``n`` (``PRAGMA user_version``).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE meta (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            revision INTEGER NOT NULL
        )""",
        "INSERT INTO meta (id, revision) VALUES (1, 0)",
        """CREATE TABLE documents (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            spec TEXT NOT NULL,
            revision INTEGER NOT NULL,
            created_revision INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (kind, name)
        ) WITHOUT ROWID""",
        """CREATE TABLE history (
            revision INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            operation TEXT NOT NULL CHECK (operation IN ('create', 'update', 'delete')),
            before TEXT,
            after TEXT,
            created_revision INTEGER NOT NULL,
            actor TEXT NOT NULL,
            time TEXT NOT NULL,
            note TEXT,
            PRIMARY KEY (revision, seq)
        )""",
        "CREATE INDEX history_by_document ON history (kind, name, revision)",
    ),
    # The secret side channel (the mesh CA's root): no revision, no history, no export.
    2: (
        """CREATE TABLE secrets (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID""",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)

_HISTORY_COLUMNS = (
    "revision, kind, name, operation, before, after, actor, time, note, created_revision"
)


_OS_REASONS = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "disk full",
}


def _reason(exc: sqlite3.Error, busy_timeout: float) -> str:
    code = getattr(exc, "sqlite_errorname", "") or ""
    if code.startswith("SQLITE_FULL"):
        return "disk full"
    if code.startswith("SQLITE_READONLY"):
        return "database or file system is read-only"
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"database locked by another connection for more than {busy_timeout:g}s"
    if code.startswith("SQLITE_IOERR"):
        return "disk I/O error"
    if code.startswith("SQLITE_CANTOPEN"):
        return "cannot open the database file"
    if code.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return "database file is corrupt or not a database"
    return "database error"


class SqliteStore(BaseStore):
    """``SqliteStore("/var/lib/xds-server/config.db")``; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used only in the executor's thread

    # --- the database thread ------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in the database thread, mapping SQLite's storage errors to
        ``StoreUnavailable``. (Tests also use it to make the database misbehave.)"""
        executor = self._executor
        if executor is None:
            raise StoreError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreError("store is not open")
        try:
            return fn(self._conn)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise  # bugs, not storage trouble
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        return StoreUnavailable(f"{_reason(exc, self._busy_timeout)} ({self.path}: {exc})")

    # --- lifecycle ----------------------------------------------------------------------

    async def _backend_open(self) -> ConfigState:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xds-store-sqlite")
        try:
            state = await asyncio.get_running_loop().run_in_executor(executor, self._open_sync)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor
        return state

    def _open_sync(self) -> ConfigState:
        try:
            _create_private(self.path)
        except OSError as exc:
            reason = _OS_REASONS.get(exc.errno or 0, exc.strerror or "error")
            raise StoreUnavailable(f"{reason} ({self.path}: {exc})") from exc
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"{self.path}: cannot use WAL (journal mode {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            _migrate(conn, self.path)
            state = _load(conn)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise self._unavailable(exc) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._conn = conn
        return state

    async def _backend_close(self) -> None:
        executor = self._executor
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        self._executor = None
        executor.shutdown(wait=False)  # idle now: its thread ends by itself

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- storage primitives ---------------------------------------------------------------

    async def _backend_write(self, planned: planning.Planned, base_revision: int) -> None:
        await self._run(lambda conn: _write(conn, planned, base_revision))

    async def _backend_history(self, query: planning.HistoryQuery) -> list[HistoryEntry]:
        return await self._run(lambda conn: _history(conn, query))

    async def _backend_entries_upto(self, revision: int) -> Iterable[HistoryEntry]:
        return await self._run(lambda conn: _last_entries_upto(conn, revision))

    async def _backend_get_secret(self, key: str) -> str | None:
        return await self._run(lambda conn: _get_secret(conn, key))

    async def _backend_put_secret(self, key: str, value: str, *, if_absent: bool) -> str:
        return await self._run(lambda conn: _put_secret(conn, key, value, if_absent))

    async def _backend_secrets(self) -> dict[str, str]:
        return await self._run(_all_secrets)


# --- helpers running in the database thread ---------------------------------------------------


def _create_private(path: Path) -> None:
    """Create the directory (0700) and an empty database file (0600) if missing; tighten an
    existing file that others can read."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode != 0o600:
            if mode & 0o077:
                log.warning("tightening the mode of %s from %o to 600", path, mode)
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists() and stat.S_IMODE(side.stat().st_mode) != 0o600:
            side.chmod(0o600)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; ``ROLLBACK`` on any exception (if SQLite has not
    already rolled back by itself, as it does after e.g. SQLITE_FULL)."""

    def __init__(self, conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> None:
        self._conn = conn
        self._begin = begin

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute(self._begin)
        return self._conn

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    with _Transaction(conn) as tx:
        version = int(tx.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}; this xds-server knows up to"
                f" {SCHEMA_VERSION} (was it written by a newer release?)"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                tx.execute(statement)
            tx.execute(f"PRAGMA user_version = {target:d}")


def _revision(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT revision FROM meta WHERE id = 1").fetchone()[0])


def _load(conn: sqlite3.Connection) -> ConfigState:
    with _Transaction(conn, "BEGIN") as tx:  # one snapshot for meta and documents
        return _load_in(tx)


def _load_in(conn: sqlite3.Connection) -> ConfigState:
    rows = conn.execute(
        "SELECT kind, name, spec, revision, created_revision, updated_at FROM documents"
    )
    docs = {
        (kind, name): Document(kind, name, load_spec(spec), rev, created, updated)
        for kind, name, spec, rev, created, updated in rows
    }
    return ConfigState(_revision(conn), docs)


def _write(conn: sqlite3.Connection, planned: planning.Planned, base_revision: int) -> None:
    with _Transaction(conn) as tx:
        if _revision(tx) != base_revision:
            raise StaleState(_load_in(tx))  # another process wrote; rolled back on exit
        tx.executemany(
            """INSERT INTO documents (kind, name, spec, revision, created_revision, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (kind, name) DO UPDATE SET spec = excluded.spec,
                   revision = excluded.revision, created_revision = excluded.created_revision,
                   updated_at = excluded.updated_at""",
            [_document_row(d) for d in planned.upserts],
        )
        tx.executemany("DELETE FROM documents WHERE kind = ? AND name = ?", planned.deletes)
        tx.executemany(
            f"INSERT INTO history (seq, {_HISTORY_COLUMNS}) VALUES ({', '.join('?' * 11)})",
            [(seq, *_entry_row(e)) for seq, e in enumerate(planned.entries)],
        )
        tx.execute("UPDATE meta SET revision = ? WHERE id = 1", (planned.state.revision,))


def _document_row(d: Document) -> tuple[object, ...]:
    spec = canonical_json(d.spec)
    return (d.kind, d.name, spec, d.revision, d.created_revision, d.updated_at)


def _json_or_none(spec: Spec | None) -> str | None:
    return None if spec is None else canonical_json(spec)


def _entry_row(e: HistoryEntry) -> tuple[object, ...]:
    return (
        e.revision, e.kind, e.name, e.operation, _json_or_none(e.before), _json_or_none(e.after),
        e.actor, e.time, e.note, e.created_revision,
    )  # fmt: skip


def _entries(rows: Iterable[tuple[Any, ...]]) -> Iterator[HistoryEntry]:
    for rev, kind, name, op, before, after, actor, time, note, created in rows:
        yield HistoryEntry(
            revision=int(rev),
            kind=str(kind),
            name=str(name),
            operation=operation_of(op, f"history revision {rev}"),
            before=None if before is None else load_spec(str(before)),
            after=None if after is None else load_spec(str(after)),
            actor=str(actor),
            time=str(time),
            note=None if note is None else str(note),
            created_revision=int(created),
        )


def _history(conn: sqlite3.Connection, query: planning.HistoryQuery) -> list[HistoryEntry]:
    where: list[str] = []
    params: list[object] = []
    for clause, value in (
        ("kind = ?", query.kind),
        ("name = ?", query.name),
        ("revision > ?", query.since_revision),
        ("revision < ?", query.before_revision),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = f"SELECT {_HISTORY_COLUMNS} FROM history"
    if where:
        sql += " WHERE " + " AND ".join(where)
    cursor = conn.execute(sql + " ORDER BY revision DESC, seq ASC", params)
    try:
        return planning.take_page(_entries(cursor), query.limit)
    finally:
        cursor.close()


def _last_entries_upto(conn: sqlite3.Connection, revision: int) -> list[HistoryEntry]:
    # SQLite documents that with a lone max() the bare columns come from the row holding the
    # maximum: one row per document, its last change up to ``revision``.
    rows = conn.execute(
        """SELECT max(revision), kind, name, operation, before, after, actor, time, note,
                  created_revision
           FROM history WHERE revision <= ? GROUP BY kind, name ORDER BY 1""",
        (revision,),
    )
    return list(_entries(rows))


def _get_secret(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM secrets WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _put_secret(conn: sqlite3.Connection, key: str, value: str, if_absent: bool) -> str:
    """In one write transaction, so that of two processes putting ``if_absent`` one wins and
    both read the winner's value."""
    conflict = "DO NOTHING" if if_absent else "DO UPDATE SET value = excluded.value"
    with _Transaction(conn) as tx:
        tx.execute(
            f"INSERT INTO secrets (key, value) VALUES (?, ?) ON CONFLICT (key) {conflict}",
            (key, value),
        )
        stored = _get_secret(tx, key)
    assert stored is not None
    return stored


def _all_secrets(conn: sqlite3.Connection) -> dict[str, str]:
    rows = conn.execute("SELECT key, value FROM secrets ORDER BY key")
    return {str(key): str(value) for key, value in rows}
