"""The push shortcuts change nothing on the wire.

Snapshots built from the previous one (``Snapshot.build(previous=...)``, as the pipeline
does) let in-sync streams look only at what changed, and share bodies and name -> version
maps between streams. Snapshots built on their own take the general path. The same
sequence of snapshots, served both ways to the same clients, must produce the same
responses, byte for byte (nonces included).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from tests.support import resources as r
from tests.support.xds_client import DeltaClient, SotwClient, node
from xds_server.cache.snapshot import EMPTY_SNAPSHOT, Snapshot
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.server import shared
from xds_server.server.delta import DeltaStream
from xds_server.server.grpc_server import start_ads_server
from xds_server.server.sotw import SotwStream
from xds_server.status import ProxyRegistry

QUIET = 0.15


def _world(
    clusters: dict[str, tuple[int, ...]], route_to: str, listener_port: int = 10000
) -> list[Any]:
    messages: list[Any] = []
    for name, ports in sorted(clusters.items()):
        messages.append(r.cluster(name))
        messages.append(r.endpoints(name, *ports))
    messages.append(r.listener("http", listener_port, "routes"))
    messages.append(r.route_config("routes", route_to))
    return messages


#: Each step: the resources of the next snapshot.
STEPS: list[list[Any]] = [
    _world({"a": (1,), "b": (2,), "c": (3,)}, "a"),
    _world({"a": (1,), "b": (2, 4), "c": (3,)}, "a"),  # one endpoint set changes
    _world({"a": (1,), "b": (2, 4), "c": (3,)}, "a"),  # nothing changes
    _world({"a": (1,), "b": (2, 4), "c": (3,), "d": (5,)}, "d"),  # cluster added, route moves
    _world({"a": (1, 6), "b": (2, 4), "d": (5,)}, "d"),  # cluster removed, endpoints change
    _world({"a": (1, 6), "b": (2, 4), "d": (5,)}, "b", listener_port=10001),  # listener, route
    _world({"a": (7,), "b": (8,), "d": (9,), "e": (1,)}, "e"),  # many endpoints at once
]


#: The snapshots each round sets, back to back (streams then skip the first of a pair).
ROUNDS: list[list[int]] = [[0], [1], [2], [3, 4], [5, 6]]


def _snapshots(chained: bool) -> list[Snapshot]:
    snapshots: list[Snapshot] = []
    previous = EMPTY_SNAPSHOT  # as the pipeline's first build
    for messages in STEPS:
        snapshot = Snapshot.build(messages, previous=previous if chained else None)
        if chained and snapshot.unchanged:
            snapshot = previous  # as the pipeline does
        snapshots.append(snapshot)
        previous = snapshot
    return snapshots


class _Reader:
    """Reads a stream in the background (cancelling a gRPC read would end the call)."""

    def __init__(self, client: Any) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.create_task(self._read(client))

    async def _read(self, client: Any) -> None:
        while True:
            response = await client.call.read()
            if response is grpc.aio.EOF:
                return
            self.queue.put_nowait(response)

    async def drain(self) -> list[Any]:
        """Every response until none comes for ``QUIET`` seconds."""
        found = []
        while True:
            try:
                found.append(await asyncio.wait_for(self.queue.get(), QUIET))
            except TimeoutError:
                return found


def _sotw_view(response: Any) -> tuple[str, str, str, bytes]:
    return (response.type_url, response.version_info, response.nonce, response.SerializeToString())


async def _sotw_run(
    channel: grpc.aio.Channel, eds: Sequence[str], steps: int, set_step: Any
) -> list[Any]:
    """A SotW ADS client that ACKs everything with its subscription."""
    client = SotwClient(channel)
    subscription = {CLUSTER: [], ENDPOINT: list(eds), LISTENER: [], ROUTE: ["routes"]}
    seen: list[Any] = []

    async def ack_all(responses: list[Any]) -> None:
        for response in responses:
            seen.append(_sotw_view(response))
            await client.ack(response, subscription[response.type_url])

    set_step(0)
    reader = _Reader(client)
    await client.request(CLUSTER, node_=node("sotw"))
    await client.request(ENDPOINT, subscription[ENDPOINT])
    await client.request(LISTENER)
    await client.request(ROUTE, subscription[ROUTE])
    for step in range(steps):
        if step:
            set_step(step)
        for _ in range(2):  # responses, then what their ACKs may cause
            await ack_all(await reader.drain())
        seen.append(("step", step))
    client.cancel()
    reader.task.cancel()
    return seen


async def _delta_run(
    channel: grpc.aio.Channel, eds: Sequence[str], steps: int, set_step: Any
) -> list[Any]:
    client = DeltaClient(channel)
    seen: list[Any] = []

    async def ack_all(responses: list[Any]) -> None:
        for response in responses:
            seen.append(
                (
                    response.type_url,
                    response.system_version_info,
                    response.nonce,
                    response.SerializeToString(),
                )
            )
            await client.ack(response)

    set_step(0)
    reader = _Reader(client)
    await client.request(CLUSTER, node_=node("delta"))
    await client.request(ENDPOINT, list(eds))
    await client.request(LISTENER)
    await client.request(ROUTE, ["routes"])
    for step in range(steps):
        if step:
            set_step(step)
        for _ in range(2):
            await ack_all(await reader.drain())
        seen.append(("step", step))
    client.cancel()
    reader.task.cancel()
    return seen


async def _serve(chained: bool, run: Any, eds: Sequence[str]) -> list[Any]:
    cache = SnapshotCache()
    server, port = await start_ads_server(cache, ProxyRegistry(), "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    snapshots = _snapshots(chained)

    def set_round(index: int) -> None:
        for step in ROUNDS[index]:
            cache.set_snapshots(snapshots[step])

    try:
        return list(await run(channel, eds, len(ROUNDS), set_round))
    finally:
        await channel.close()
        await server.stop(None)


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    calls = [0]
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("eds", [("a", "b", "c", "d", "e", "x"), ("e", "b")])
async def test_sotw_responses_are_the_same_with_and_without_the_shortcuts(
    eds: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    shortcuts = _count_calls(monkeypatch, SotwStream, "_push_changes")
    general = await _serve(False, _sotw_run, eds)
    assert shortcuts[0] == 0
    shortcut = await _serve(True, _sotw_run, eds)
    assert shortcuts[0] > 0
    assert shortcut == general
    assert sum(1 for item in general if item[0] != "step") > len(STEPS)


@pytest.mark.parametrize("eds", [("a", "b", "c", "d", "e", "x"), ("e", "b")])
async def test_delta_responses_are_the_same_with_and_without_the_shortcuts(
    eds: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    shortcuts = _count_calls(monkeypatch, DeltaStream, "_diff_changed")
    general = await _serve(False, _delta_run, eds)
    assert shortcuts[0] == 0
    shortcut = await _serve(True, _delta_run, eds)
    assert shortcuts[0] > 0
    assert shortcut == general
    assert sum(1 for item in general if item[0] != "step") > len(STEPS)


def test_changes_record_what_differs_from_the_previous_snapshot() -> None:
    first, second, third, _fourth, fifth = _snapshots(True)[:5]
    assert first.changes is not None and set(first.changes) == {CLUSTER, ENDPOINT, LISTENER, ROUTE}
    assert second.base_serial == first.serial
    assert second.changes is not None
    assert {t: (set(c.updated), set(c.removed)) for t, c in second.changes.items()} == {
        ENDPOINT: ({"b"}, set())
    }
    assert third is second  # nothing changed: the pipeline keeps the same snapshot
    assert fifth.changes is not None
    assert fifth.changes[CLUSTER].removed == frozenset({"c"})
    assert fifth.changes[ENDPOINT].updated == frozenset({"a"})
    assert Snapshot.build(STEPS[0]).changes is None


def test_changes_since_an_older_snapshot_combine_the_steps() -> None:
    snapshots = _snapshots(True)
    first, last = snapshots[0], snapshots[-1]
    combined = last.changes_since(first.serial)
    assert combined is not None
    assert set(combined[CLUSTER].updated) == {"d", "e"}
    assert set(combined[CLUSTER].removed) == {"c"}
    assert set(combined[ENDPOINT].updated) == {"a", "b", "d", "e"}
    assert set(combined[ENDPOINT].removed) == {"c"}
    assert set(combined[LISTENER].updated) == {"http"}
    assert set(combined[ROUTE].updated) == {"routes"}
    assert last.changes_since(last.base_serial) is last.changes
    assert last.changes_since(None) is None
    assert last.changes_since(10**9) is None  # not an ancestor: unknown


async def test_sotw_streams_keep_sharing_what_they_hold_after_a_partial_push(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After an endpoint change, each stream holds the new snapshot's shared name -> version
    map, not a copy of its own (a thousand names per stream at scale), and the changed
    resources are chosen and joined once for every stream that held the same map."""
    joins = [0]
    join = SotwStream._joined

    def counted_join(resources: Any) -> Any:
        joins[0] += 1
        return join(resources)

    monkeypatch.setattr(SotwStream, "_joined", staticmethod(counted_join))
    cache = SnapshotCache()
    registry = ProxyRegistry()
    server, port = await start_ads_server(cache, registry, "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    snapshots = _snapshots(chained=True)
    names = ["a", "b", "c"]
    clients: list[SotwClient] = []
    try:
        cache.set_snapshots(snapshots[0])
        for node_id in ("n1", "n2"):
            client = SotwClient(channel)
            clients.append(client)
            await client.request(ENDPOINT, names, node_=node(node_id))
            await client.ack(await client.recv(), names)
        cache.set_snapshots(snapshots[1])  # only b's endpoints change
        for client in clients:
            update = await client.recv()
            assert update.type_url == ENDPOINT and len(update.resources) == 1
            await client.ack(update, names)
        held = []
        for node_id in ("n1", "n2"):
            status = registry.get(node_id)
            assert status is not None
            held.append(status.types[ENDPOINT].held)
        assert held[0] is held[1]
        assert joins[0] == 1  # one join for both streams
        current = snapshots[1].of_type(ENDPOINT)
        assert dict(held[0]) == {name: current[name].version for name in names}
    finally:
        for client in clients:
            client.cancel()
        await channel.close()
        await server.stop(None)


def test_what_streams_share_is_memoised_per_snapshot_and_goes_with_it() -> None:
    snapshot = Snapshot.build(STEPS[0])
    serial = snapshot.serial
    names = frozenset({"a", "b", "x"})
    whole = shared.full_state(snapshot, ENDPOINT)
    assert shared.full_state(snapshot, ENDPOINT) is whole
    some = shared.selection(snapshot, ENDPOINT, names)
    assert shared.selection(snapshot, ENDPOINT, frozenset(sorted(names))) is some
    assert [r.name for r in some.resources] == ["a", "b"]
    assert shared.held_versions(snapshot, ENDPOINT, names) is some.versions
    assert shared.full_state(Snapshot.build(STEPS[0]), ENDPOINT) is not whole
    del snapshot
    gc.collect()
    assert serial not in shared._memos  # the memo went with its snapshot
