"""The Consul KV store beyond the shared contract: several replicas on one Consul (the double),
conflicts between them, bounded history, and Consul faults."""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.consul_double import ConsulDouble
from tests.unit.admin_harness import assert_problem, listener, route, running_api
from xds_server.consul import ConsulKv, ConsulSettings, TxnOutcome
from xds_server.store import (
    Change,
    ConfigState,
    InvalidChange,
    NotFound,
    PreconditionFailed,
    RevisionNotFound,
    StoreUnavailable,
)
from xds_server.store.consul_kv import ConsulKvSettings, ConsulKvStore, normalise_prefix

PREFIX = "xds/config"


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble(jitter=False) as started:
        yield started


def settings(double: ConsulDouble, **kw: Any) -> ConsulKvSettings:
    """The store's settings on the double; ``kw``: fields of either settings class."""
    consul: dict[str, Any] = {"address": double.url, "request_timeout": 2.0, "wait": 10.0}
    store: dict[str, Any] = {"backoff_base": 0.05, "backoff_max": 0.2}
    for key, value in kw.items():
        (consul if key in ConsulSettings.__dataclass_fields__ else store)[key] = value
    return ConsulKvSettings(ConsulSettings.from_env({}, **consul), **store)


@pytest.fixture
async def replicas(double: ConsulDouble) -> AsyncIterator[Callable[..., Any]]:
    """``await make(**kw)``: an open ConsulKvStore on the double, closed after the test."""
    async with AsyncExitStack() as stack:

        async def make(prefix: str = PREFIX, **kw: Any) -> ConsulKvStore:
            store_kw = {k: kw.pop(k) for k in ("history_limit", "max_txn_bytes") if k in kw}
            store = ConsulKvStore(prefix, settings(double, **kw), **store_kw)
            await store.open()
            stack.push_async_callback(store.close)
            return store

        yield make


async def stop_following(store: ConsulKvStore) -> None:
    """Stop a replica's blocking watch, as if its blocking queries never returned."""
    follower = store._follower
    assert follower is not None
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)


def put(name: str, spec: dict[str, Any], **kw: Any) -> Change:
    return Change("Route", name, spec, **kw)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll ``predicate`` on the event loop until it holds; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, "condition not met in time"
        await asyncio.sleep(0.005)  # a store's state has no event to await
    return time.monotonic() - start


async def next_state(states: AsyncIterator[ConfigState], revision: int, timeout: float) -> float:
    """Await ``states`` until one reaches ``revision``; returns the seconds it took."""
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        async for state in states:
            if state.revision >= revision:
                return time.monotonic() - start
    raise AssertionError("watch ended")


def test_prefixes_are_checked() -> None:
    assert normalise_prefix("/xds-server/config/") == "xds-server/config"
    for bad in ("", "/", "a//b", "a/../b", "a b", "a?b"):
        with pytest.raises(ValueError):
            normalise_prefix(bad)


async def test_the_layout_in_consul(double: ConsulDouble, replicas: Any) -> None:
    store = await replicas()
    await store.commit([put("web", {"hostnames": ["a"]})], actor="alice")
    revision = json.loads(double.kv_get(f"{PREFIX}/revision") or b"")
    assert revision["revision"] == 1
    doc = json.loads(double.kv_get(f"{PREFIX}/docs/Route/web") or b"")
    assert doc["spec"] == {"hostnames": ["a"]}
    assert (doc["revision"], doc["created_revision"]) == (1, 1)
    chunk = json.loads(double.kv_get(f"{PREFIX}/history/{1:020d}/0000") or b"")
    assert [(e["name"], e["operation"], e["actor"]) for e in chunk["entries"]] == [
        ("web", "create", "alice")
    ]
    # Names are percent-encoded into one key segment.
    await store.commit([Change("Route", "a/b c", {})], actor="t")
    assert double.kv_get(f"{PREFIX}/docs/Route/a%2Fb%20c") is not None


async def test_a_write_on_one_replica_reaches_the_others_watch(replicas: Any) -> None:
    a, b, c = await replicas(), await replicas(), await replicas()
    watching = b.watch()
    assert (await anext(watching)).revision == 0
    latencies = []
    for revision in range(1, 6):
        await a.commit([put("web", {"v": revision})], actor="alice")
        latencies.append(await next_state(watching, revision, timeout=1.0))
        assert b.current() == a.current()
    await until(lambda: c.current().revision == 5, timeout=1.0)
    assert c.current() == a.current()
    # History and older states are the same on every replica.
    assert await b.history(limit=100) == await a.history(limit=100)
    assert await c.state_at(3) == await a.state_at(3)
    print(f"replica B saw each of A's commits after at most {max(latencies) * 1000:.1f} ms")
    # And back: B writes, A sees it.
    await b.commit([put("api", {})], actor="bob")
    await until(lambda: a.current().revision == 6, timeout=1.0)
    assert a.current() == b.current()


async def test_conflicting_writes_on_two_replicas_one_wins_the_other_fails(
    replicas: Any,
) -> None:
    a, b = await replicas(), await replicas()
    await a.commit([put("web", {"v": 0})], actor="t")
    await until(lambda: b.current().revision == 1)
    etag = '"1"'
    for round_ in range(10):
        results = await asyncio.gather(
            a.commit([put("web", {"by": "a", "round": round_}, if_match=etag)], actor="a"),
            b.commit([put("web", {"by": "b", "round": round_}, if_match=etag)], actor="b"),
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, BaseException)]
        assert len(wins) == 1 and len(losses) == 1, results
        assert isinstance(losses[0], PreconditionFailed)
        etag = f'"{wins[0].revision}"'
        await until(lambda: a.current() == b.current())
    # Both creating the same document: one creates it, the other gets 412 too.
    created = await asyncio.gather(
        a.commit([put("new", {"by": "a"}, if_none_match=True)], actor="a"),
        b.commit([put("new", {"by": "b"}, if_none_match=True)], actor="b"),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in created) == ["CommitResult", "PreconditionFailed"]
    assert a.current().revision == 12


async def test_a_stale_replica_is_refused_by_consul_and_re_plans(
    double: ConsulDouble, replicas: Any
) -> None:
    """B does not see A's commit (its watch is stopped); the ``cas`` on the revision key fails,
    B catches up and re-plans: a stale ETag gives 412, an unrelated write lands on top."""
    a, b = await replicas(), await replicas()
    await a.commit([put("web", {"v": 1})], actor="a")
    await until(lambda: b.current().revision == 1)
    for store in (a, b):
        await stop_following(store)
    txns = double.request_count("/v1/txn")
    await a.commit([put("web", {"v": 2})], actor="a")
    assert b.current().revision == 1  # B has not seen it
    with pytest.raises(PreconditionFailed):
        await b.commit([put("web", {"v": "b"}, if_match='"1"')], actor="b")
    assert b.current().revision == 2  # caught up on the way
    other = await b.commit([put("api", {"v": 1})], actor="b")
    assert other.revision == 3
    await a.commit([put("web", {"v": 3})], actor="a")  # A is stale now: re-planned to 4
    assert a.current().revision == 4
    assert {key[1] for key in a.current().documents} == {"web", "api"}  # no lost update
    # A: write; B: cas refused, catch-up read, write; A: cas refused, catch-up read, write.
    assert double.request_count("/v1/txn") - txns == 7


async def test_no_revision_is_lost_or_duplicated_under_concurrent_random_writes(
    replicas: Any,
) -> None:
    # The issue asks for 1,000 (3 writers x 334; about 4 s). XDS_TEST_KV_WRITES for more.
    writes = int(os.environ.get("XDS_TEST_KV_WRITES", "1002"))
    stores = [await replicas(), await replicas(), await replicas()]
    rng = random.Random(20240501)
    outcomes: list[tuple[int, str]] = []  # (revision, writer) of each successful commit
    refused = busy = 0

    async def writer(store: ConsulKvStore, label: str, count: int) -> None:
        nonlocal refused, busy
        for i in range(count):
            name = f"r{rng.randrange(12)}"
            doc = store.current().get("Route", name)
            guard = rng.random() < 0.5
            if doc is not None and rng.random() < 0.2:
                change = Change("Route", name, None, if_match=doc.etag if guard else None)
            else:
                etag = doc.etag if doc is not None else None
                change = put(
                    name,
                    {"by": label, "i": i},
                    if_match=etag if guard and etag else None,
                    if_none_match=guard and doc is None,
                )
            try:
                result = await store.commit([change], actor=label)
            except PreconditionFailed:
                refused += 1
                continue
            except NotFound:  # deleted meanwhile by another replica
                refused += 1
                continue
            except StoreUnavailable as error:  # lost the race too often: a 503, nothing written
                assert "too many concurrent writers" in str(error)
                busy += 1
                continue
            if result.changed:
                outcomes.append((result.revision, label))

    started = time.monotonic()
    per_writer = writes // len(stores)
    await asyncio.gather(*(writer(s, f"w{i}", per_writer) for i, s in enumerate(stores)))
    elapsed = time.monotonic() - started
    revisions = sorted(r for r, _ in outcomes)
    latest = max(revisions)
    # Every successful commit got its own revision, and the revisions have no holes.
    assert revisions == list(range(1, latest + 1))
    for store in stores:
        await until(lambda store=store: store.current().revision == latest)  # type: ignore[misc]
    history = await stores[0].history(limit=100_000)
    assert sorted({e.revision for e in history}) == revisions
    assert {(e.revision, e.actor) for e in history} == set(outcomes)
    for store in stores[1:]:
        assert store.current() == stores[0].current()
        assert await store.history(limit=100_000) == history
    # A replica opened now rebuilds the same state, and every older state matches replay.
    fresh = await replicas()
    assert fresh.current() == stores[0].current()
    for revision in (1, latest // 2, latest - 1):
        assert await fresh.state_at(revision) == await stores[1].state_at(revision)
    print(
        f"{per_writer * len(stores)} writes from {len(stores)} replicas in {elapsed:.2f}s:"
        f" {len(outcomes)} commits, {refused} refused (412/404), {busy} busy (503),"
        f" revisions 1..{latest}"
    )


async def test_history_is_bounded(double: ConsulDouble, replicas: Any) -> None:
    store = await replicas(history_limit=5)
    for revision in range(1, 13):
        await store.commit([put(f"r{revision % 3}", {"v": revision})], actor="t")
    history = await store.history(limit=100)
    assert sorted({e.revision for e in history}) == [8, 9, 10, 11, 12]
    kept = [rev for rev in range(1, 13) if double.kv_get(f"{PREFIX}/history/{rev:020d}/0000")]
    assert kept == [8, 9, 10, 11, 12]
    # States back to the oldest kept revision's parent can be rebuilt, older ones cannot.
    state7 = await store.state_at(7)
    assert {name: d.spec for (_, name), d in state7.documents.items()} == {
        "r0": {"v": 6},
        "r1": {"v": 7},
        "r2": {"v": 5},
    }
    with pytest.raises(RevisionNotFound, match="no longer in history: states from revision 7"):
        await store.state_at(6)
    with pytest.raises(RevisionNotFound):
        await store.rollback(3, actor="t")
    rolled = await store.rollback(7, actor="t")
    assert rolled.revision == 13
    assert {k: d.spec for k, d in store.current().documents.items()} == {
        k: d.spec for k, d in state7.documents.items()
    }
    # Another replica reads the same bounded history.
    other = await replicas(history_limit=5)
    assert await other.history(limit=100) == await store.history(limit=100)
    assert await other.state_at(8) == await store.state_at(8)


async def test_a_commit_too_large_for_one_transaction_is_refused_whole(
    double: ConsulDouble, replicas: Any
) -> None:
    store = await replicas(max_txn_ops=8)
    with pytest.raises(InvalidChange, match="split it"):
        await store.commit([put(f"r{i}", {}) for i in range(7)], actor="t")
    assert store.current().revision == 0
    assert double.kv_get(f"{PREFIX}/revision") is None
    assert (await store.commit([put(f"r{i}", {}) for i in range(5)], actor="t")).revision == 1
    big = await replicas(prefix="big", max_txn_bytes=4096)
    with pytest.raises(InvalidChange, match="txn_max_req_len"):
        await big.commit([put("r", {"blob": "x" * 5000})], actor="t")


async def test_consul_unavailable_writes_fail_reads_serve_the_last_config(
    double: ConsulDouble, replicas: Any
) -> None:
    a, b = await replicas(), await replicas()
    await a.commit([put("web", {"v": 1})], actor="t")
    await until(lambda: b.current().revision == 1)
    before, history = a.current(), await a.history()

    double.refuse_connections()
    with pytest.raises(StoreUnavailable, match="cannot reach Consul"):
        await a.commit([put("web", {"v": 2})], actor="t")
    assert a.current() is before
    assert await a.history() == history  # history and old states come from memory
    assert await a.state_at(1) == before
    await until(lambda: b.last_error is not None)  # B's watch noticed, and keeps serving
    assert b.current().revision == 1

    double.accept_connections()
    assert (await a.commit([put("web", {"v": 2})], actor="t")).revision == 2
    await until(lambda: b.current().revision == 2, timeout=5)
    assert b.last_error is None

    for fault in ("leader", "500", "hang"):
        if fault == "leader":
            double.lose_leader()
        elif fault == "500":
            double.fail(500, "rpc error: injected")
        else:
            double.hang(path_prefix="/v1/txn")
        with pytest.raises(StoreUnavailable):
            await a.commit([put("web", {"v": fault})], actor="t")
        double.heal()
        assert a.current().revision == 2
    assert (await a.commit([put("web", {"v": 3})], actor="t")).revision == 3


async def test_a_commit_whose_answer_was_lost_is_confirmed(
    double: ConsulDouble, replicas: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await replicas()
    real_txn = ConsulKv.txn
    lose = {"next_write": True}

    async def txn_then_lose_the_answer(self: ConsulKv, ops: Any) -> TxnOutcome:
        outcome = await real_txn(self, ops)
        writes = any(op["KV"]["Verb"] == "cas" for op in ops)
        if writes and lose["next_write"]:
            lose["next_write"] = False
            raise StoreUnavailable("Consul did not answer in 2s")
        return outcome

    monkeypatch.setattr(ConsulKv, "txn", txn_then_lose_the_answer)
    result = await store.commit([put("web", {"v": 1})], actor="t")
    assert result.revision == 1
    assert json.loads(double.kv_get(f"{PREFIX}/revision") or b"")["revision"] == 1
    # The next commit is not confused by it.
    assert (await store.commit([put("web", {"v": 2})], actor="t")).revision == 2


async def test_acl_token_is_sent_and_a_wrong_one_is_a_clear_error() -> None:
    with ConsulDouble(jitter=False, acl_token="s3cret") as double:
        store = ConsulKvStore(PREFIX, settings(double, token="s3cret"))
        await store.open()
        try:
            await store.commit([put("web", {})], actor="t")
        finally:
            await store.close()
        assert set(double.tokens_seen) == {"s3cret"}
        wrong = ConsulKvStore(PREFIX, settings(double, token="nope"))
        with pytest.raises(StoreUnavailable, match="ACL"):
            await wrong.open()


async def test_config_going_backwards_in_consul_is_not_served(
    double: ConsulDouble, replicas: Any
) -> None:
    store = await replicas()
    await store.commit([put("web", {"v": 1})], actor="t")
    kept = store.current()
    double.kv_delete(f"{PREFIX}/", recurse=True)  # someone wiped the prefix
    await until(lambda: store._diverged is not None)
    assert store.current() is kept  # Envoy keeps its config
    with pytest.raises(StoreUnavailable, match="went back"):
        await store.commit([put("web", {"v": 2})], actor="t")


async def test_admin_api_on_consul_kv_503_on_writes_and_reads_still_served(
    double: ConsulDouble,
) -> None:
    store = ConsulKvStore(PREFIX, settings(double))
    async with running_api(store) as api:
        assert (await api.put("listeners/public", listener())).status_code in (200, 201)
        created = await api.put("routes/web", route("web"))
        assert created.status_code in (200, 201), created.text
        double.refuse_connections()
        failed = await api.put("routes/web", route("web", hostnames=["other.example.com"]))
        problem = assert_problem(failed, 503)
        assert problem["type"].endswith("store-unavailable")
        assert failed.headers["retry-after"]
        got = await api.client.get("/v1/routes/web")
        assert got.status_code == 200
        assert got.json()["spec"] == route("web")["spec"]
        listed = await api.client.get("/v1/routes")
        assert listed.status_code == 200
        history = await api.client.get("/v1/history")
        assert history.status_code == 200
        double.accept_connections()
        again = await api.put("routes/web", route("web", hostnames=["other.example.com"]))
        assert again.status_code == 200, again.text
        assert isinstance(api.client, httpx.AsyncClient)


async def test_https_to_consul_with_a_ca_file(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "consul-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with ConsulDouble(jitter=False, ssl_context=server_context) as double:
        assert double.url.startswith("https://")
        store = ConsulKvStore(PREFIX, settings(double, ca_file=str(ca_file)))
        await store.open()
        try:
            assert (await store.commit([put("web", {})], actor="t")).revision == 1
        finally:
            await store.close()
        untrusted = ConsulKvStore(PREFIX, settings(double))  # the system CAs do not know it
        with pytest.raises(StoreUnavailable, match="Consul"):
            await untrusted.open()
