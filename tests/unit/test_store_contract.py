"""The ConfigStore contract, run against every implementation (memory, SQLite, and Consul KV
on the Consul double)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.consul_double import ConsulDouble
from xds_server.consul import ConsulSettings
from xds_server.store import (
    Change,
    ConfigState,
    ConfigStore,
    InvalidChange,
    MemoryStore,
    NotFound,
    PreconditionFailed,
    RevisionNotFound,
    SqliteStore,
    StoreError,
)
from xds_server.store.consul_kv import ConsulKvSettings, ConsulKvStore


@pytest.fixture(params=["memory", "sqlite", "consul-kv"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConfigStore]:
    s: ConfigStore
    if request.param == "consul-kv":
        with ConsulDouble(jitter=False) as double:
            s = ConsulKvStore(
                "xds/config",
                ConsulKvSettings(
                    ConsulSettings.from_env({}, address=double.url, request_timeout=5.0, wait=10.0)
                ),
            )
            await s.open()
            yield s
            await s.close()
        return
    s = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "config.db")
    await s.open()
    yield s
    await s.close()


def put(kind: str, name: str, spec: dict[str, Any], **kw: Any) -> Change:
    return Change(kind, name, spec, **kw)


def delete(kind: str, name: str, **kw: Any) -> Change:
    return Change(kind, name, None, **kw)


def specs(state: ConfigState) -> dict[tuple[str, str], dict[str, Any]]:
    return {key: doc.spec for key, doc in state.documents.items()}


async def all_history(store: ConfigStore) -> list[tuple[int, str, str, str]]:
    return [(e.revision, e.kind, e.name, e.operation) for e in await store.history(limit=10_000)]


async def test_a_new_store_is_empty_at_revision_zero(store: ConfigStore) -> None:
    assert store.current() == ConfigState(0, {})
    assert await store.history() == []


async def test_create_replace_delete(store: ConfigStore) -> None:
    created = await store.commit([put("Route", "web", {"hostnames": ["a"]})], actor="alice")
    assert created.revision == 1
    doc = store.current().get("Route", "web")
    assert doc is not None
    assert (doc.spec, doc.revision, doc.created_revision, doc.etag) == (
        {"hostnames": ["a"]},
        1,
        1,
        '"1"',
    )
    assert datetime.fromisoformat(doc.updated_at).utcoffset() is not None
    assert doc.updated_at.endswith("Z")
    assert [(e.operation, e.before, e.after) for e in created.changed] == [
        ("create", None, {"hostnames": ["a"]})
    ]

    replaced = await store.commit([put("Route", "web", {"hostnames": ["b"]})], actor="bob")
    doc = store.current().get("Route", "web")
    assert doc is not None
    assert (replaced.revision, doc.revision, doc.created_revision, doc.spec) == (
        2,
        2,
        1,
        {"hostnames": ["b"]},
    )
    assert [(e.operation, e.before, e.after) for e in replaced.changed] == [
        ("update", {"hostnames": ["a"]}, {"hostnames": ["b"]})
    ]

    deleted = await store.commit([delete("Route", "web")], actor="carol")
    assert deleted.revision == 3
    assert store.current().get("Route", "web") is None
    assert store.current().revision == 3
    assert [(e.operation, e.before, e.after) for e in deleted.changed] == [
        ("delete", {"hostnames": ["b"]}, None)
    ]


async def test_every_commit_bumps_the_revision_by_exactly_one(store: ConfigStore) -> None:
    first = await store.commit(
        [put("Route", "a", {}), put("Route", "b", {}), put("Listener", "l", {"port": 80})],
        actor="t",
    )
    second = await store.commit([put("Route", "a", {"x": 1}), delete("Route", "b")], actor="t")
    third = await store.commit([put("TlsPolicy", "t", {})], actor="t")
    assert [first.revision, second.revision, third.revision] == [1, 2, 3]
    assert {e.revision for e in first.changed} == {1}
    assert len(first.changed) == 3
    assert store.current().revision == 3
    # Documents untouched by later commits keep the revision of their last change.
    listener = store.current().get("Listener", "l")
    assert listener is not None
    assert listener.revision == 1


async def test_one_failing_precondition_writes_nothing(store: ConfigStore) -> None:
    await store.commit([put("Route", "a", {"v": 1}), put("Route", "b", {"v": 1})], actor="t")
    await store.commit([put("Route", "a", {"v": 2})], actor="t")
    before = store.current()
    history_before = await all_history(store)

    with pytest.raises(PreconditionFailed) as failed:
        await store.commit(
            [
                put("Route", "new", {"v": 1}),
                delete("Route", "b"),
                put("Route", "a", {"v": 3}, if_match='"1"'),  # stale: "a" is at revision 2
            ],
            actor="t",
        )
    assert (failed.value.kind, failed.value.name) == ("Route", "a")
    assert (failed.value.expected, failed.value.actual) == ('"1"', '"2"')
    assert store.current() is before
    assert await all_history(store) == history_before

    with pytest.raises(NotFound):
        await store.commit([put("Route", "new", {}), delete("Route", "missing")], actor="t")
    assert store.current() is before
    assert await all_history(store) == history_before
    # The next successful commit takes the next revision: no revision was burnt.
    assert (await store.commit([put("Route", "new", {})], actor="t")).revision == 3


async def test_if_match(store: ConfigStore) -> None:
    await store.commit([put("Route", "a", {"v": 1})], actor="t")
    await store.commit([put("Route", "other", {})], actor="t")  # moves the global revision
    doc = store.current().get("Route", "a")
    assert doc is not None
    assert doc.etag == '"1"'

    with pytest.raises(PreconditionFailed):
        await store.commit([put("Route", "a", {"v": 2}, if_match='"2"')], actor="t")
    ok = await store.commit([put("Route", "a", {"v": 2}, if_match=doc.etag)], actor="t")
    assert ok.revision == 3
    # The old ETag is stale now, for updates and deletes alike.
    with pytest.raises(PreconditionFailed):
        await store.commit([put("Route", "a", {"v": 3}, if_match='"1"')], actor="t")
    with pytest.raises(PreconditionFailed):
        await store.commit([delete("Route", "a", if_match='"1"')], actor="t")
    # "*": must exist.
    with pytest.raises(PreconditionFailed) as missing:
        await store.commit([put("Route", "nope", {}, if_match="*")], actor="t")
    assert missing.value.actual is None
    assert (
        await store.commit([put("Route", "a", {"v": 4}, if_match="*")], actor="t")
    ).revision == 4
    assert (await store.commit([delete("Route", "a", if_match='"4"')], actor="t")).revision == 5
    assert store.current().get("Route", "a") is None


async def test_if_none_match_creates_only(store: ConfigStore) -> None:
    await store.commit([put("Route", "a", {"v": 1}, if_none_match=True)], actor="t")
    with pytest.raises(PreconditionFailed) as exists:
        await store.commit([put("Route", "a", {"v": 2}, if_none_match=True)], actor="t")
    assert (exists.value.expected, exists.value.actual) == (None, '"1"')
    doc = store.current().get("Route", "a")
    assert doc is not None
    assert doc.spec == {"v": 1}


async def test_a_change_to_the_same_spec_is_a_no_op(store: ConfigStore) -> None:
    await store.commit([put("Route", "a", {"x": 1, "y": [1, 2]}), put("Route", "b", {})], "t")
    same = await store.commit([put("Route", "a", {"y": [1, 2], "x": 1})], actor="t")
    assert (same.revision, same.changed) == (1, ())
    assert store.current().revision == 1
    assert len(await store.history()) == 2

    mixed = await store.commit(
        [put("Route", "a", {"x": 1, "y": [1, 2]}), put("Route", "b", {"z": 0})], "t"
    )
    assert mixed.revision == 2
    assert [(e.name, e.operation) for e in mixed.changed] == [("b", "update")]
    a = store.current().get("Route", "a")
    assert a is not None
    assert a.revision == 1  # untouched, so its ETag did not change either


async def test_preconditions_apply_to_no_op_changes_too(store: ConfigStore) -> None:
    await store.commit([put("Route", "a", {"v": 1})], actor="t")
    await store.commit([put("Route", "a", {"v": 2})], actor="t")
    with pytest.raises(PreconditionFailed):
        await store.commit([put("Route", "a", {"v": 2}, if_match='"1"')], actor="t")


@pytest.mark.parametrize(
    "changes",
    [
        [put("Route", "a", {}), put("Route", "a", {"v": 1})],
        [put("Route", "", {})],
        [put("", "a", {})],
        [Change("Route", "a", [1, 2])],  # type: ignore[arg-type]
        [put("Route", "a", {"v": math.nan})],
        [put("Route", "a", {"v": object()})],
    ],
    ids=["twice", "empty-name", "empty-kind", "not-an-object", "nan", "not-json"],
)
async def test_invalid_changes_are_rejected_whole(
    store: ConfigStore, changes: list[Change]
) -> None:
    await store.commit([put("Route", "keep", {})], actor="t")
    before = store.current()
    with pytest.raises(InvalidChange):
        await store.commit([put("Route", "other", {}), *changes], actor="t")
    assert store.current() is before


async def test_stored_specs_are_copies_of_the_input(store: ConfigStore) -> None:
    spec: dict[str, Any] = {"rules": [{"path": "/a"}]}
    await store.commit([put("Route", "a", spec)], actor="t")
    spec["rules"].append({"path": "/b"})
    doc = store.current().get("Route", "a")
    assert doc is not None
    assert doc.spec == {"rules": [{"path": "/a"}]}


async def test_history_records_who_when_what(store: ConfigStore) -> None:
    await store.commit(
        [put("Route", "a", {"v": 1}), put("Listener", "l", {})], "alice", note="init"
    )
    await store.commit([put("Route", "a", {"v": 2})], actor="bob")
    await store.commit([delete("Listener", "l")], actor="carol", note="cleanup")

    entries = await store.history()
    assert [(e.revision, e.kind, e.name, e.operation, e.actor, e.note) for e in entries] == [
        (3, "Listener", "l", "delete", "carol", "cleanup"),
        (2, "Route", "a", "update", "bob", None),
        # within a revision: commit order
        (1, "Route", "a", "create", "alice", "init"),
        (1, "Listener", "l", "create", "alice", "init"),
    ]
    assert (entries[1].before, entries[1].after) == ({"v": 1}, {"v": 2})
    assert (entries[0].before, entries[0].after) == ({}, None)
    assert entries[2].time == entries[3].time
    assert all(datetime.fromisoformat(e.time).utcoffset() is not None for e in entries)


async def test_history_filters(store: ConfigStore) -> None:
    await store.commit(
        [put("Route", "a", {}), put("Route", "b", {}), put("Listener", "a", {})], "t"
    )
    await store.commit([put("Route", "a", {"v": 1})], actor="t")
    await store.commit([put("Route", "b", {"v": 1}), delete("Listener", "a")], actor="t")
    await store.commit([delete("Route", "a")], actor="t")

    def ids(entries: list[Any]) -> list[tuple[int, str, str]]:
        return [(e.revision, e.kind, e.name) for e in entries]

    assert ids(await store.history("Route", "a")) == [
        (4, "Route", "a"),
        (2, "Route", "a"),
        (1, "Route", "a"),
    ]
    assert ids(await store.history("Listener")) == [(3, "Listener", "a"), (1, "Listener", "a")]
    assert ids(await store.history(name="a", since_revision=1)) == [
        (4, "Route", "a"),
        (3, "Listener", "a"),
        (2, "Route", "a"),
    ]
    assert ids(await store.history(before_revision=3)) == [
        (2, "Route", "a"),
        (1, "Route", "a"),
        (1, "Route", "b"),
        (1, "Listener", "a"),
    ]
    assert ids(await store.history("Route", since_revision=1, before_revision=4)) == [
        (3, "Route", "b"),
        (2, "Route", "a"),
    ]
    assert await store.history("Certificate") == []
    with pytest.raises(ValueError):
        await store.history(limit=0)


async def test_history_pages_never_split_a_revision(store: ConfigStore) -> None:
    sizes = [1, 3, 1, 2, 1, 1, 4]  # entries per revision 1..7
    for revision, size in enumerate(sizes, start=1):
        await store.commit([put("Route", f"r{i}", {"v": revision}) for i in range(size)], "t")
    everything = await store.history(limit=1000)
    assert len(everything) == sum(sizes)

    for limit in (1, 2, 3, 5):
        pages: list[list[Any]] = []
        before: int | None = None
        while page := await store.history(limit=limit, before_revision=before):
            pages.append(page)
            before = page[-1].revision
        assert [e for page in pages for e in page] == everything
        for page in pages:
            revisions = {e.revision for e in page}
            # whole revisions only: every entry of each revision in the page is in it
            assert len(page) == sum(sizes[r - 1] for r in revisions)
            assert len(page) <= limit or len(revisions) == 1
    # newest revision first; a page of limit 3 takes revisions 7 (4 entries) alone
    first = await store.history(limit=3)
    assert {e.revision for e in first} == {7}
    second = await store.history(limit=3, before_revision=7)
    assert [e.revision for e in second] == [6, 5]


async def test_state_at_each_revision(store: ConfigStore) -> None:
    seen = [store.current()]
    for changes in (
        [put("Route", "a", {"v": 1}), put("Route", "b", {"v": 1})],
        [put("Route", "a", {"v": 2})],
        [delete("Route", "b"), put("Listener", "l", {})],
        [put("Route", "b", {"v": 3})],
        [delete("Route", "a"), delete("Route", "b")],
    ):
        await store.commit(changes, actor="t")
        seen.append(store.current())
    for revision, expected in enumerate(seen):
        assert await store.state_at(revision) == expected
    for bad in (-1, len(seen)):
        with pytest.raises(RevisionNotFound):
            await store.state_at(bad)


async def test_rollback_restores_exactly_the_old_documents(store: ConfigStore) -> None:
    await store.commit([put("Route", "a", {"v": 1}), put("Listener", "l", {"p": 1})], "t")  # 1
    await store.commit([put("Route", "b", {"v": 1})], "t")  # 2
    target = store.current()
    await store.commit([put("Route", "a", {"v": 2})], "t")  # 3
    await store.commit([delete("Route", "b")], "t")  # 4
    await store.commit([put("Route", "c", {"v": 1})], "t")  # 5: created after the target

    result = await store.rollback(2, actor="ops")
    assert result.revision == 6
    now = store.current()
    assert now.revision == 6
    assert specs(now) == specs(target)
    assert {k: d.created_revision for k, d in now.documents.items()} == {
        k: d.created_revision for k, d in target.documents.items()
    }
    assert sorted((e.kind, e.name, e.operation) for e in result.changed) == [
        ("Route", "a", "update"),
        ("Route", "b", "create"),
        ("Route", "c", "delete"),
    ]
    assert {e.note for e in result.changed} == {"rollback to 2"}
    assert {e.actor for e in result.changed} == {"ops"}
    listener = now.get("Listener", "l")
    assert listener is not None
    assert listener.revision == 1  # unchanged since the target: not rewritten
    assert await store.state_at(6) == now
    assert [e.note for e in await store.history(since_revision=5)] == ["rollback to 2"] * 3

    # To the config it already has: no new revision.
    again = await store.rollback(2, actor="ops")
    assert (again.revision, again.changed) == (6, ())
    # To the empty beginning.
    empty = await store.rollback(0, actor="ops", note="start over")
    assert empty.revision == 7
    assert store.current().documents == {}
    assert {e.note for e in empty.changed} == {"rollback to 0: start over"}
    with pytest.raises(RevisionNotFound):
        await store.rollback(8, actor="ops")


async def test_rollback_restores_the_age_of_a_recreated_document(store: ConfigStore) -> None:
    await store.commit([put("Route", "old", {"host": "x"})], "t")  # 1
    await store.commit([put("Route", "young", {"host": "x"})], "t")  # 2
    assert [d.name for d in store.current().of_kind("Route")] == ["old", "young"]
    await store.commit([delete("Route", "old")], "t")  # 3
    await store.commit([put("Route", "old", {"host": "x"})], "t")  # 4: same spec, younger now
    assert [d.name for d in store.current().of_kind("Route")] == ["young", "old"]

    result = await store.rollback(2, actor="t")
    assert [(e.name, e.operation, e.created_revision) for e in result.changed] == [
        ("old", "update", 1)
    ]
    assert [d.name for d in store.current().of_kind("Route")] == ["old", "young"]
    assert await store.state_at(5) == store.current()


async def test_dry_run_writes_nothing(store: ConfigStore) -> None:
    await store.commit([put("Route", "a", {"v": 1})], "t")
    before = store.current()
    preview = await store.commit(
        [put("Route", "a", {"v": 2}), put("Route", "b", {})], "t", dry_run=True
    )
    assert preview.revision == 2
    assert [(e.name, e.operation) for e in preview.changed] == [("a", "update"), ("b", "create")]
    assert specs(preview.state) == {("Route", "a"): {"v": 2}, ("Route", "b"): {}}
    assert store.current() is before
    assert len(await store.history()) == 1
    with pytest.raises(PreconditionFailed):
        await store.commit([put("Route", "a", {}, if_none_match=True)], "t", dry_run=True)

    rollback_preview = await store.rollback(0, "t", dry_run=True)
    assert [e.operation for e in rollback_preview.changed] == ["delete"]
    assert store.current() is before
    # A real commit afterwards still takes revision 2.
    assert (await store.commit([put("Route", "b", {})], "t")).revision == 2


async def test_of_kind_is_oldest_first(store: ConfigStore) -> None:
    await store.commit([put("Route", "z", {}), put("Route", "m", {})], "t")
    await store.commit([put("Route", "a", {}), put("Listener", "l", {})], "t")
    await store.commit([put("Route", "z", {"changed": True})], "t")  # updates keep their age
    state = store.current()
    assert [d.name for d in state.of_kind("Route")] == ["m", "z", "a"]
    assert [d.name for d in state.of_kind("Listener")] == ["l"]
    assert state.of_kind("Certificate") == ()
    assert state.kinds() == {"Route", "Listener"}


async def test_watch_yields_current_then_each_new_state(store: ConfigStore) -> None:
    states = store.watch()
    assert (await anext(states)).revision == 0
    await store.commit([put("Route", "a", {})], "t")
    assert await asyncio.wait_for(anext(states), 5) == store.current()
    # A slow watcher gets the latest state, not every intermediate one.
    await store.commit([put("Route", "b", {})], "t")
    await store.commit([put("Route", "c", {})], "t")
    latest = await asyncio.wait_for(anext(states), 5)
    assert latest.revision == 3
    # Neither no-ops nor dry runs wake it; the next real commit does.
    await store.commit([put("Route", "c", {})], "t")
    await store.commit([put("Route", "d", {})], "t", dry_run=True)
    await store.commit([put("Route", "e", {})], "t")
    assert (await asyncio.wait_for(anext(states), 5)).revision == 4


async def test_close_ends_watchers_and_later_calls_fail(store: ConfigStore) -> None:
    states = store.watch()
    await anext(states)
    waiting = asyncio.ensure_future(anext(states))
    await asyncio.sleep(0)  # let it start waiting
    assert not waiting.done()
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(StoreError):
        store.current()
    with pytest.raises(StoreError):
        await store.commit([put("Route", "a", {})], "t")


async def test_reopen_sees_what_was_committed(store: ConfigStore) -> None:
    await store.commit([put("Route", "a", {"v": 1})], "t")
    await store.commit([put("Route", "a", {"v": 2}), put("Route", "b", {})], "t")
    before, history = store.current(), await all_history(store)
    await store.close()
    await store.open()
    assert store.current() == before
    assert await all_history(store) == history
    assert (await store.commit([delete("Route", "b")], "t")).revision == 3


async def test_actor_is_required(store: ConfigStore) -> None:
    with pytest.raises(ValueError):
        await store.commit([put("Route", "a", {})], actor="")
