"""The store's secret side channel (the mesh CA's root): every backend alike, never in the
config's revisions, history or a default export; shared by processes and replicas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.consul_double import ConsulDouble
from xds_server.cli import store as cli_store
from xds_server.consul import ConsulSettings
from xds_server.store import Change, MemoryStore, SqliteStore
from xds_server.store.backend import BaseStore
from xds_server.store.consul_kv import ConsulKvSettings, ConsulKvStore
from xds_server.store.transfer import TransferError, check_export, export_config, import_config

PREFIX = "xds/config"
SECRET = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble(jitter=False) as started:
        yield started


def consul_settings(double: ConsulDouble) -> ConsulKvSettings:
    consul = ConsulSettings.from_env({}, address=double.url, request_timeout=2.0, wait=10.0)
    return ConsulKvSettings(consul, backoff_base=0.05, backoff_max=0.2)


@pytest.fixture(params=["memory", "sqlite", "consul-kv"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[[], Any]]:
    """``await make()``: an open store of the parametrised kind; every call on the same
    storage (one file, one Consul), as a second process or replica would see it."""
    async with AsyncExitStack() as stack:
        double = (
            stack.enter_context(ConsulDouble(jitter=False))
            if request.param == "consul-kv"
            else None
        )
        memory = MemoryStore()

        async def new() -> BaseStore:
            store: BaseStore
            if request.param == "memory":  # one process: the same store
                if memory._is_open:
                    return memory
                store = memory
            elif request.param == "sqlite":
                store = SqliteStore(tmp_path / "config.db")
            else:
                assert double is not None
                store = ConsulKvStore(PREFIX, consul_settings(double))
            await store.open()
            stack.push_async_callback(store.close)
            return store

        yield new


async def test_the_semantics(make: Callable[[], Any]) -> None:
    store = await make()
    assert await store.get_secret("mesh/ca/builtin") is None
    assert await store.put_secret_if_absent("mesh/ca/builtin", "first") == "first"
    assert await store.put_secret_if_absent("mesh/ca/builtin", "second") == "first"
    assert await store.get_secret("mesh/ca/builtin") == "first"
    await store.put_secret("mesh/ca/builtin", SECRET)
    assert await store.get_secret("mesh/ca/builtin") == SECRET
    await store.put_secret("mesh/ca/state", "{}")
    assert await store.secrets() == {"mesh/ca/builtin": SECRET, "mesh/ca/state": "{}"}
    # Not the config: no revision, no history, no document.
    assert store.current().revision == 0 and store.current().documents == {}
    assert await store.history() == []
    await store.commit([Change("Route", "web", {"v": 1})], "t")
    assert store.current().revision == 1 and len(await store.history()) == 1
    for bad in ("", "/a", "a/", "a//b", "a/../b", "a b", "a?b", "x" * 300):
        with pytest.raises(ValueError, match="invalid secret key"):
            await store.get_secret(bad)


async def test_another_process_or_replica_sees_them_and_races_are_won_once(
    make: Callable[[], Any],
) -> None:
    one, two = await make(), await make()
    won = await asyncio.gather(
        *(s.put_secret_if_absent("mesh/ca/builtin", f"root {i}") for i, s in enumerate([one, two]))
    )
    assert won[0] == won[1] in ("root 0", "root 1")
    assert await two.get_secret("mesh/ca/builtin") == won[0]
    await one.put_secret("mesh/ca/builtin", "rotated")
    assert await two.get_secret("mesh/ca/builtin") == "rotated"


async def test_sqlite_keeps_them_across_a_restart_in_its_own_table(tmp_path: Path) -> None:
    path = tmp_path / "config.db"
    async with SqliteStore(path) as store:
        await store.put_secret_if_absent("mesh/ca/builtin", SECRET)
        await store.commit([Change("Route", "web", {"v": 1})], "t")
    async with SqliteStore(path) as store:
        assert await store.get_secret("mesh/ca/builtin") == SECRET

        def dump(conn: Any) -> list[Any]:
            return [tuple(row) for row in conn.execute("SELECT * FROM history")]

        assert SECRET not in repr(await store._run(dump))


async def test_consul_kv_layout_beside_the_config(double: ConsulDouble) -> None:
    async with ConsulKvStore(PREFIX, consul_settings(double)) as store:
        await store.put_secret_if_absent("mesh/ca/builtin", SECRET)
        await store.commit([Change("Route", "web", {"v": 1})], "t")
    assert double.kv_get(f"{PREFIX}/secrets/mesh/ca/builtin") == SECRET.encode()
    chunk = double.kv_get(f"{PREFIX}/history/{1:020d}/0000") or b""
    assert b"PRIVATE KEY" not in chunk
    # A replica opening the prefix reads the config as before, the secret aside.
    async with ConsulKvStore(PREFIX, consul_settings(double)) as again:
        assert set(again.current().documents) == {("Route", "web")}
        assert await again.get_secret("mesh/ca/builtin") == SECRET


async def test_export_leaves_secrets_out_unless_asked_and_import_takes_them(
    tmp_path: Path,
) -> None:
    async with SqliteStore(tmp_path / "a.db") as source:
        await source.commit([Change("Route", "web", {"v": 1})], "t")
        await source.put_secret("mesh/ca/builtin", SECRET)
        plain = await export_config(source, history=True)
        full = await export_config(source, secrets=True)
    assert "secrets" not in plain and "PRIVATE KEY" not in json.dumps(plain)
    assert full["secrets"] == {"mesh/ca/builtin": SECRET}
    target = MemoryStore()
    await target.open()
    await import_config(target, full, "t", dry_run=True)
    assert await target.get_secret("mesh/ca/builtin") is None  # a dry run writes nothing
    await target.put_secret("mesh/ca/builtin", "theirs")
    await import_config(target, full, "t", replace=False)
    assert await target.get_secret("mesh/ca/builtin") == "theirs"  # a merge keeps theirs
    await import_config(target, full, "t")
    assert await target.get_secret("mesh/ca/builtin") == SECRET
    assert set(target.current().documents) == {("Route", "web")}
    for bad in ([1], {"a b": "x"}, {"k": 1}):
        with pytest.raises(TransferError, match="secrets"):
            check_export({**full, "secrets": bad})


def test_the_cli_exports_secrets_only_with_the_flag(tmp_path: Path) -> None:
    db = tmp_path / "config.db"

    async def seed() -> None:
        async with SqliteStore(db) as store:
            await store.commit([Change("Route", "web", {"v": 1})], "t")
            await store.put_secret("mesh/ca/builtin", json.dumps({"private_key": SECRET}))

    asyncio.run(seed())
    app = typer.Typer()
    app.command("noop")(lambda: None)
    cli_store.register(app)
    runner = CliRunner()
    plain, full = tmp_path / "plain.json", tmp_path / "full.json"
    done = runner.invoke(app, ["store", "export", "--store", f"sqlite:{db}", str(plain)])
    assert done.exit_code == 0, done.output
    assert "PRIVATE KEY" not in plain.read_text()
    assert "secrets" not in json.loads(plain.read_text())
    done = runner.invoke(
        app, ["store", "export", "--include-secrets", "--store", f"sqlite:{db}", str(full)]
    )
    assert done.exit_code == 0, done.output
    assert "1 secrets (private keys" in done.output
    assert "PRIVATE KEY" in full.read_text()
    help_text = runner.invoke(app, ["store", "export", "--help"]).output
    assert "--include-secrets" in help_text and "PRIVATE KEY" in help_text
    # Imported elsewhere, the secret comes along.
    other = tmp_path / "other.db"
    done = runner.invoke(
        app, ["store", "import", "--no-validate", "--store", f"sqlite:{other}", str(full)]
    )
    assert done.exit_code == 0, done.output

    async def read() -> str | None:
        async with SqliteStore(other) as store:
            return await store.get_secret("mesh/ca/builtin")

    assert json.loads(asyncio.run(read()) or "{}") == {"private_key": SECRET}
