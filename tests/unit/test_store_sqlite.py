"""What only the SQLite store can get wrong: files, durability, storage errors, threads.

The behaviour shared with every store is in ``test_store_contract.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from xds_server.store import (
    Change,
    PreconditionFailed,
    SqliteStore,
    StoreError,
    StoreUnavailable,
)
from xds_server.store.sqlite import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "config.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(db, busy_timeout=0.2)
    await s.open()
    yield s
    await s.close()


def put(kind: str, name: str, spec: dict[str, Any]) -> Change:
    return Change(kind, name, spec)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def side(db: Path, suffix: str) -> Path:
    return db.with_name(db.name + suffix)


async def everything(store: SqliteStore) -> tuple[Any, ...]:
    """The whole observable content: state, full history, every old state."""
    current = store.current()
    history = await store.history(limit=1_000_000)
    old = [await store.state_at(r) for r in range(current.revision + 1)]
    return (current, history, old)


# --- files and settings -------------------------------------------------------------------


async def test_files_are_private_and_the_directory_is_created(db: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        async with SqliteStore(db) as store:
            await store.commit([put("Certificate", "c", {"private_key": "secret"})], "t")
            for path in (db, side(db, "-wal"), side(db, "-shm")):
                assert path.exists(), path
                assert mode(path) == 0o600, (path, oct(mode(path)))
        assert mode(db.parent) == 0o700
    finally:
        os.umask(old_umask)


async def test_an_existing_readable_database_is_tightened(db: Path) -> None:
    async with SqliteStore(db) as store:
        await store.commit([put("Route", "a", {})], "t")
    os.chmod(db, 0o644)
    async with SqliteStore(db) as store:
        assert mode(db) == 0o600
        assert store.current().revision == 1


async def test_wal_full_sync_and_schema_version(store: SqliteStore) -> None:
    def settings(conn: sqlite3.Connection) -> tuple[Any, ...]:
        return tuple(
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "foreign_keys", "user_version")
        )

    assert await store._run(settings) == ("wal", 2, 1, SCHEMA_VERSION)  # 2 = FULL


async def test_a_database_from_a_newer_release_is_refused(db: Path) -> None:
    async with SqliteStore(db) as store:
        await store.commit([put("Route", "a", {})], "t")
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="schema version"):
        await SqliteStore(db).open()


# --- durability ---------------------------------------------------------------------------


async def test_state_and_history_survive_close_and_reopen(db: Path) -> None:
    async with SqliteStore(db) as store:
        await store.commit([put("Route", "a", {"v": 1}), put("Listener", "l", {})], "alice")
        await store.commit([put("Route", "a", {"v": 2})], "bob", note="n")
        await store.commit([Change("Listener", "l", None)], "carol")
        await store.rollback(1, "dave")
        before = await everything(store)
    async with SqliteStore(db) as store:
        assert await everything(store) == before
        assert store.current().revision == 4


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from xds_server.store import Change, SqliteStore

    async def main():
        store = SqliteStore(sys.argv[1])
        await store.open()
        while True:
            n = store.current().revision + 1
            result = await store.commit(
                [Change("Route", f"r{n % 5}", {"n": n}), Change("Listener", "l", {"n": n})],
                actor="writer",
            )
            assert result.revision == n, (result.revision, n)
            print(n, flush=True)

    asyncio.run(main())
    """
)


def write_until_killed(db: Path, at_least: int) -> list[int]:
    """Run a writer process, SIGKILL it after ``at_least`` commits were reported, return every
    revision it reported (each was reported after ``commit`` returned)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    reported: list[int] = []
    try:
        while len(reported) < at_least:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early: {proc.wait()} {proc.stderr.read()}")
            reported.append(int(line))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    reported += [int(line) for line in out.split()]  # reported before the kill, read after
    return reported


async def test_every_reported_commit_survives_kill_9(db: Path) -> None:
    reported: list[int] = []
    for _ in range(3):  # each round starts from what the previous kill left
        reported += write_until_killed(db, at_least=25)
        async with SqliteStore(db) as store:
            latest = store.current().revision
            # Everything reported is there; at most the one commit in flight beyond it.
            assert max(reported) <= latest <= max(reported) + 1
            for n in reported:
                old = await store.state_at(n)
                assert old.revision == n
                route, listener = old.get("Route", f"r{n % 5}"), old.get("Listener", "l")
                assert route is not None and listener is not None
                assert (route.spec, listener.spec) == ({"n": n}, {"n": n})
            history = await store.history(limit=1_000_000)
            assert sorted({e.revision for e in history}) == list(range(1, latest + 1))
    assert reported == sorted(set(reported))  # sanity: one writer at a time, no revision twice
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --- storage failures ---------------------------------------------------------------------


async def test_read_only_database_is_unavailable_and_nothing_changes(store: SqliteStore) -> None:
    await store.commit([put("Route", "a", {"v": 1})], "t")
    before = await everything(store)
    await store._run(lambda conn: conn.execute("PRAGMA query_only = ON"))

    with pytest.raises(StoreUnavailable) as failed:
        await store.commit([put("Route", "a", {"v": 2}), put("Route", "b", {})], "t")
    assert "read-only" in failed.value.reason
    assert await everything(store) == before
    with pytest.raises(StoreUnavailable):
        await store.rollback(0, "t")
    assert await everything(store) == before

    await store._run(lambda conn: conn.execute("PRAGMA query_only = OFF"))
    assert (await store.commit([put("Route", "a", {"v": 2})], "t")).revision == 2


async def test_disk_full_is_unavailable_and_nothing_changes(db: Path, store: SqliteStore) -> None:
    await store.commit([put("Route", "a", {"v": 1})], "t")
    before = await everything(store)

    def cap_size(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await store._run(cap_size)
    big = {"blob": "x" * 200_000}
    with pytest.raises(StoreUnavailable) as failed:
        await store.commit([put("Certificate", "big", big), put("Route", "a", {"v": 2})], "t")
    assert "disk full" in failed.value.reason
    assert await everything(store) == before

    await store._run(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    assert (await store.commit([put("Certificate", "big", big)], "t")).revision == 2
    await store.close()
    async with SqliteStore(db) as reopened:
        assert reopened.current().revision == 2


async def test_database_locked_too_long_is_unavailable(db: Path, store: SqliteStore) -> None:
    await store.commit([put("Route", "a", {"v": 1})], "t")
    before = await everything(store)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        with pytest.raises(StoreUnavailable) as failed:
            await store.commit([put("Route", "a", {"v": 2})], "t")
        assert "locked" in failed.value.reason
        assert await everything(store) == before
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert (await store.commit([put("Route", "a", {"v": 2})], "t")).revision == 2


def permissions_are_enforced(directory: Path) -> bool:
    probe = directory / "probe"
    probe.write_text("")
    probe.chmod(0o400)
    try:
        probe.open("a").close()
    except PermissionError:
        return True
    finally:
        probe.unlink()
    return False  # root with CAP_DAC_OVERRIDE


@pytest.mark.parametrize("read_only", ["file", "directory"])
async def test_read_only_files_make_the_store_unavailable(
    tmp_path: Path, db: Path, read_only: str
) -> None:
    if not permissions_are_enforced(tmp_path):
        pytest.skip("file permissions are not enforced for this user (root)")
    async with SqliteStore(db) as store:
        await store.commit([put("Route", "a", {"v": 1})], "t")
        before = store.current()
    if read_only == "file":
        os.chmod(db, 0o400)
    os.chmod(db.parent, 0o500)  # SQLite cannot create the -wal and -shm files
    try:
        with pytest.raises(StoreUnavailable) as failed:
            await SqliteStore(db).open()
        assert any(
            reason in failed.value.reason
            for reason in ("permission denied", "read-only", "cannot open")
        )
    finally:
        os.chmod(db.parent, 0o700)
        os.chmod(db, 0o600)
    async with SqliteStore(db) as store:
        assert store.current() == before


# --- threads, cancellation, other writers ---------------------------------------------------


async def test_waiting_for_the_disk_does_not_block_the_event_loop(db: Path) -> None:
    async with SqliteStore(db, busy_timeout=60) as store:
        other = sqlite3.connect(db, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            commit = asyncio.ensure_future(store.commit([put("Route", "a", {})], "t"))
            for _ in range(10):
                await asyncio.sleep(0)  # the loop keeps running other tasks…
            assert not commit.done()  # …while the commit waits for the lock in its thread
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert (await asyncio.wait_for(commit, 30)).revision == 1


async def test_a_started_commit_completes_when_its_caller_is_cancelled(db: Path) -> None:
    async with SqliteStore(db, busy_timeout=60) as store:
        states = store.watch()
        assert (await anext(states)).revision == 0
        other = sqlite3.connect(db, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            caller = asyncio.ensure_future(store.commit([put("Route", "a", {})], "t"))
            await asyncio.sleep(0)  # the caller starts the commit…
            await asyncio.sleep(0)  # …which is now waiting on the database thread
            assert len(store._commits) == 1
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            other.execute("ROLLBACK")
        finally:
            other.close()
        published = await asyncio.wait_for(anext(states), 30)
        assert published.revision == 1
        assert store.current() == published
    async with SqliteStore(db) as reopened:
        assert reopened.current() == published


async def test_two_stores_on_one_file_do_not_lose_writes(db: Path) -> None:
    async with SqliteStore(db) as first, SqliteStore(db) as second:
        await first.commit([put("Route", "a", {"by": "first"})], "t")
        # second has not seen revision 1: its preconditions are checked on the fresh state
        with pytest.raises(PreconditionFailed):
            await second.commit([Change("Route", "a", {"by": "second"}, if_none_match=True)], "t")
        assert second.current().revision == 1
        result = await second.commit([put("Route", "b", {})], "t")
        assert result.revision == 2
        assert (await first.commit([put("Route", "c", {})], "t")).revision == 3
        assert first.current().documents.keys() == {("Route", "a"), ("Route", "b"), ("Route", "c")}
    async with SqliteStore(db) as store:
        assert [e.revision for e in await store.history()] == [3, 2, 1]
