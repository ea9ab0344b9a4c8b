"""``xds-server serve`` end to end: the event stream resumes exactly where a client left it,
and every meaningful event is one log line at the chosen ``--log-level``.

Proxies are the test's own xDS clients (they connect, ACK, NACK and leave on cue).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.support.envoy import wait_for
from tests.support.process import ServerProcess
from tests.support.sse import EventStream, Frame, open_events
from tests.support.xds_client import SotwClient, node
from xds_server.cache.types import CLUSTER, LISTENER


def start(tmp_path: Path, *flags: str) -> ServerProcess:
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "services:\n  web:\n    endpoints:\n      - {address: 127.0.0.1, port: 9}\n"
    )
    server = ServerProcess(
        "--ads-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--registry",
        f"static:{registry}",
        "--store",
        f"sqlite:{tmp_path / 'store.db'}",
        "--debounce",
        "20ms",
        *flags,
    ).start()
    try:  # start-up's events are over once both were sent
        with open_events(server.admin, since=0, types="source_ready,snapshot") as startup:
            startup.until(
                lambda _: {"source_ready", "snapshot"} <= {g.event for g in startup.frames}
            )
    except BaseException:
        server.kill()
        raise
    return server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = start(tmp_path, "--log-level", "debug", "--log-format", "json")
    try:
        yield process
    finally:
        process.kill()


def put_listener(server: ServerProcess, name: str, port: int) -> int:
    answer = httpx.put(
        f"{server.admin}/v1/listeners/{name}",
        json={"kind": "Listener", "name": name, "spec": {"port": port}},
        timeout=5,
    )
    assert answer.status_code in (200, 201), answer.text
    return int(answer.json()["revision"])


def built(revision: int) -> Any:
    """A predicate: the snapshot event that follows the revision event of ``revision``."""
    seen = {"revision": False}

    def done(frame: Frame) -> bool:
        if frame.event == "revision" and frame.data["revision"] == revision:
            seen["revision"] = True
        return seen["revision"] and frame.event == "snapshot"

    return done


async def proxy_comes_acks_nacks_and_leaves(server: ServerProcess, node_id: str) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.ads_port}")
    client = SotwClient(channel)

    async def response_of(type_url: str) -> Any:
        """The next response of ``type_url``; others (pushes of a new snapshot) are ACKed."""
        while True:
            response = await client.recv()
            if response.type_url == type_url:
                return response
            await client.ack(response)

    try:
        await client.request(CLUSTER, node_=node(node_id, "edge"))
        await client.ack(await response_of(CLUSTER))
        await client.request(LISTENER)
        await client.nack(await response_of(LISTENER), "listener 'a': rejected by the test")

        def nacked() -> bool:  # (a newer push may have followed: the NACK is then history)
            found = httpx.get(f"{server.admin}/v1/proxies/{node_id}", timeout=5).json()
            return found["types"]["LDS"]["last_nack"] is not None

        # The test's write may still be building when the client connects: a push of the
        # new snapshot that crosses the NACK makes its nonce stale, and the server rightly
        # ignores it. The client then NACKs the newer response too, as Envoy would.
        deadline = asyncio.get_running_loop().time() + 10
        while not await asyncio.to_thread(nacked):
            assert asyncio.get_running_loop().time() < deadline, "the NACK was never read"
            with contextlib.suppress(TimeoutError):
                newer = await asyncio.wait_for(response_of(LISTENER), 0.2)
                await client.nack(newer, "listener 'a': rejected by the test")
    finally:
        client.cancel()
        await channel.close()


def read(stream: EventStream, done: Any) -> list[Frame]:
    return stream.until(done)


async def test_a_client_resuming_with_last_event_id_gets_exactly_what_it_missed(
    server: ServerProcess,
) -> None:
    with open_events(server.admin) as watcher:  # connected all along
        with open_events(server.admin) as first:
            revision = put_listener(server, "a", 18100)
            received = await asyncio.to_thread(read, first, built(revision))
        last_seen = received[-1].id
        assert last_seen is not None

        # While the client is away: a proxy comes and goes, and the config changes.
        await proxy_comes_acks_nacks_and_leaves(server, "evt-1")
        revision = put_listener(server, "b", 18101)
        everything = await asyncio.to_thread(
            read, watcher, lambda f: f.event == "disconnect" and f.data["node_id"] == "evt-1"
        )
        everything += await asyncio.to_thread(read, watcher, built(revision))
        missed = [f for f in everything if f.id is not None and f.id > last_seen]
        kinds = {f.event for f in missed}
        assert {"connect", "ack", "nack", "disconnect", "revision", "snapshot"} <= kinds
        nack = next(f for f in missed if f.event == "nack")
        assert nack.data["message"] == "listener 'a': rejected by the test"
        assert nack.data["resource_type"] == "LDS" and nack.data["node_id"] == "evt-1"

        with open_events(server.admin, last_event_id=last_seen) as again:
            resumed = await asyncio.to_thread(
                read, again, lambda f: f.id is not None and f.id >= (missed[-1].id or 0)
            )
            assert [(f.id, f.event, f.data) for f in resumed] == [
                (f.id, f.event, f.data) for f in missed
            ]
            ids = [f.id or 0 for f in resumed]
            assert ids == list(range(last_seen + 1, last_seen + 1 + len(ids)))  # no holes
            revision = put_listener(server, "c", 18102)
            following = await asyncio.to_thread(again.next_frame)
            assert following.id == ids[-1] + 1  # nothing repeated
            assert following.event == "revision" and following.data["revision"] == revision


def log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    found = []
    for line in list(server.output):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                found.append(entry)
    return found


def logged(server: ServerProcess, level: str, *fragments: str) -> dict[str, Any] | None:
    for entry in log_lines(server):
        if entry["level"] == level and all(f in entry["message"] for f in fragments):
            return entry
    return None


async def test_one_log_line_per_meaningful_event(server: ServerProcess) -> None:
    revision = put_listener(server, "logged", 18110)
    await proxy_comes_acks_nacks_and_leaves(server, "log-1")
    for level, fragments in [
        ("info", (f"config revision {revision} applied (1 documents)",)),
        ("info", ("snapshot built generation=", "resources=")),
        ("info", ("proxy connected node=log-1 group=edge",)),
        ("debug", ("ACK node=log-1 group=edge type=CDS",)),
        ("warning", ("NACK node=log-1", "listener 'a': rejected by the test")),
        ("info", ("proxy disconnected node=log-1 group=edge",)),
    ]:
        entry = await asyncio.to_thread(
            wait_for,
            lambda level=level, fragments=fragments: logged(server, level, *fragments),
            10,
            f"{level}: {fragments}",
        )
        assert entry["time"].endswith("Z") and entry["logger"].startswith("xds_server")
    built_line = logged(server, "info", "snapshot built")
    assert built_line is not None and isinstance(built_line["duration_ms"], float)
    disconnects = [e for e in log_lines(server) if "proxy disconnected node=log-1" in e["message"]]
    assert len(disconnects) == 1


def test_log_level_warning_keeps_info_out(tmp_path: Path) -> None:
    server = start(tmp_path, "--log-level", "warning")
    try:
        put_listener(server, "quiet", 18120)

        def builds() -> bool:
            text = httpx.get(f"{server.admin}/metrics", timeout=5).text
            return 'xds_server_snapshot_builds_total{outcome="ok"} 2.0' in text

        wait_for(builds, 10, "the second snapshot build")
        assert server.process is not None
        server.terminate()
        output = server.rest_of_output()
    finally:
        server.kill()
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert "listening ads=" in output  # the start-up line is not a log line
    assert [e for e in entries if e["level"] in ("debug", "info")] == []
