"""``store export`` / ``store import``: a whole config moves between stores in one revision."""

from __future__ import annotations

import asyncio
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from tests.consul_double import ConsulDouble
from tests.support import seed
from xds_server.cli import store as cli_store
from xds_server.consul import ConsulSettings
from xds_server.store import Change, ConfigState, MemoryStore, SqliteStore
from xds_server.store.consul_kv import ConsulKvSettings, ConsulKvStore
from xds_server.store.transfer import (
    TransferError,
    check_export,
    export_config,
    import_config,
    read_export,
    write_export,
)


def docs(state: ConfigState) -> dict[tuple[str, str], tuple[dict[str, Any], int]]:
    return {key: (d.spec, d.created_revision) for key, d in state.documents.items()}


async def filled(store: Any) -> Any:
    await store.open()
    await store.commit([Change("Route", "b", {"v": 1}), Change("Listener", "l", {"p": 1})], "t")
    await store.commit([Change("Route", "a", {"v": 1})], "t")
    await store.commit([Change("Route", "b", {"v": 2}), Change("Route", "gone", {})], "t")
    await store.commit([Change("Route", "gone", None)], "t")
    return store


async def test_sqlite_to_consul_kv_in_one_revision_ages_kept(tmp_path: Path) -> None:
    source = await filled(SqliteStore(tmp_path / "a.db"))
    data = await export_config(source, history=True)
    assert data["revision"] == 4
    assert [(d["kind"], d["name"]) for d in data["documents"]] == [
        ("Listener", "l"),
        ("Route", "b"),
        ("Route", "a"),
    ]
    assert [(e["revision"], e["name"]) for e in data["history"]] == [
        (1, "b"), (1, "l"), (2, "a"), (3, "b"), (3, "gone"), (4, "gone"),
    ]  # fmt: skip
    with ConsulDouble(jitter=False) as double:
        target = ConsulKvStore(
            "moved",
            ConsulKvSettings(
                ConsulSettings.from_env({}, address=double.url, request_timeout=5, wait=10)
            ),
        )
        await target.open()
        try:
            await target.commit([Change("Route", "stale", {})], "t")  # replaced by the import
            result = await import_config(target, data, "ops")
            assert result.revision == 2
            assert docs(target.current()) == docs(source.current())
            assert [d.name for d in target.current().of_kind("Route")] == ["b", "a"]
            entries = await target.history(since_revision=1)
            assert {e.note for e in entries} == {"import of revision 4"}
            assert {e.actor for e in entries} == {"ops"}
            # Importing the same again changes nothing.
            again = await import_config(target, data, "ops")
            assert (again.revision, again.changed) == (2, ())
        finally:
            await target.close()
    await source.close()


async def test_merge_dry_run_and_validation(tmp_path: Path) -> None:
    source = await filled(MemoryStore())
    data = await export_config(source)
    target = MemoryStore()
    await target.open()
    await target.commit([Change("Route", "mine", {"keep": True})], "t")
    preview = await import_config(target, data, "ops", replace=False, dry_run=True)
    assert preview.revision == 2 and target.current().revision == 1
    merged = await import_config(target, data, "ops", replace=False)
    assert set(target.current().documents) == {
        ("Route", "mine"), ("Route", "a"), ("Route", "b"), ("Listener", "l"),
    }  # fmt: skip
    assert merged.revision == 2

    def refuse(state: ConfigState) -> None:
        assert ("Route", "mine") not in state.documents  # sees the replaced result
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await import_config(target, data, "ops", validate=refuse)
    assert target.current().revision == 2  # nothing written


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"documents": []}, "not an xds-server config export"),
        ({"format": "xds-server/config", "version": 2, "documents": []}, "version"),
        ({"format": "xds-server/config", "version": 1, "documents": {}}, "list"),
        (
            {"format": "xds-server/config", "version": 1, "documents": [{"kind": "Route"}]},
            "non-empty",
        ),
        (
            {
                "format": "xds-server/config",
                "version": 1,
                "documents": [{"kind": "Route", "name": "a", "spec": {}}] * 2,
            },
            "twice",
        ),
    ],
)
def test_bad_exports_are_refused(data: Any, reason: str) -> None:
    with pytest.raises(TransferError, match=reason):
        check_export(data)


async def test_files_json_and_yaml_are_private(tmp_path: Path) -> None:
    source = await filled(MemoryStore())
    data = await export_config(source, history=True)
    for name in ("config.json", "config.yaml"):
        path = tmp_path / name
        write_export(data, str(path))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert read_export(str(path)) == data
    assert json.loads((tmp_path / "config.json").read_text())["revision"] == 4
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["revision"] == 4
    with pytest.raises(TransferError, match="cannot read"):
        read_export(str(tmp_path / "missing.json"))


def test_the_cli_moves_a_config_from_sqlite_to_consul_kv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a group needs a sibling for "store" to stay a group
    cli_store.register(app)
    runner = CliRunner()
    db = tmp_path / "config.db"
    seed.seed_store(db, [seed.listener("public", 10000), seed.route("web", "public", "web")])
    out = tmp_path / "export.yaml"
    exported = runner.invoke(app, ["store", "export", "--store", f"sqlite:{db}", str(out)])
    assert exported.exit_code == 0, exported.output
    assert "exported revision 1: 2 documents" in exported.output
    with ConsulDouble(jitter=False) as double:
        monkeypatch.setenv("CONSUL_HTTP_ADDR", double.url)
        args = ["store", "import", "--store", "consul-kv:xds/config", str(out)]
        dry = runner.invoke(app, [*args, "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "dry run: revision 1 would have 2 created" in dry.output
        assert double.kv_get("xds/config/revision") is None
        done = runner.invoke(app, [*args, "--actor", "migration"])
        assert done.exit_code == 0, done.output
        assert "imported as revision 1: 2 created, 0 updated, 0 deleted" in done.output
        assert double.kv_get("xds/config/docs/Route/web") is not None
        back = tmp_path / "back.json"
        again = runner.invoke(
            app, ["store", "export", "--store", "consul-kv:xds/config", str(back)]
        )
        assert again.exit_code == 0, again.output
        original, moved = read_export(str(out)), read_export(str(back))
        assert [(d["kind"], d["name"], d["spec"]) for d in original["documents"]] == [
            (d["kind"], d["name"], d["spec"]) for d in moved["documents"]
        ]
        # An invalid config is refused whole, with the reason.
        broken = dict(original)
        broken["documents"] = [d for d in original["documents"] if d["kind"] == "Route"]
        write_export(broken, str(tmp_path / "broken.json"))
        refused = runner.invoke(
            app,
            ["store", "import", "--store", "consul-kv:xds/config", str(tmp_path / "broken.json")],
        )
        assert refused.exit_code == 1
        assert "no listener 'public'" in refused.output
        assert "nothing was written" in refused.output
        double.refuse_connections()
        down = runner.invoke(app, [*args])
        assert down.exit_code == 1 and "cannot reach Consul" in down.output
    bad_store = runner.invoke(app, ["store", "export", "--store", "nope:x", "-"])
    assert bad_store.exit_code == 2


def test_export_to_stdout(tmp_path: Path) -> None:
    store = MemoryStore()

    async def run() -> dict[str, Any]:
        await filled(store)
        return await export_config(store)

    data = asyncio.run(run())
    buffer = io.StringIO()
    write_export(data, "-", "json", stdout=buffer)
    assert json.loads(buffer.getvalue()) == data
