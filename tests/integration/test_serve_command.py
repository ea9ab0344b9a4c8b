"""``xds-server serve``: the start-up line, readiness, and a clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import httpx
import pytest

from tests.support.process import ServerProcess
from tests.support.xds_client import SotwClient, node
from xds_server.cache.types import CLUSTER


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_prints_its_addresses_and_exits_cleanly(tmp_path: Path, signum: int) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "services:\n  web:\n    endpoints:\n      - {address: 127.0.0.1, port: 9}\n"
    )
    server = ServerProcess.local(tmp_path / "store.db", f"static:{registry}").start()
    try:
        assert server.ads_port > 0 and server.admin_port > 0
        async with httpx.AsyncClient() as http:
            ready = await http.get(server.admin + "/readyz", timeout=5)
        assert ready.json()["status"] == "ready"
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.ads_port}")
        client = SotwClient(channel)
        await client.request(CLUSTER, node_=node("n1"))
        response = await client.recv()
        assert response.type_url == CLUSTER  # no routes yet, so no clusters: an empty set
        assert server.process is not None
        started = time.monotonic()
        server.process.send_signal(signum)
        code = await asyncio.to_thread(server.process.wait, 10)
        elapsed = time.monotonic() - started
        print(f"exit after {signal.Signals(signum).name}: code {code} in {elapsed:.2f}s")
        assert code == 0
        assert elapsed < 5
        with pytest.raises((grpc.aio.AioRpcError, EOFError)):
            await client.recv(timeout=5)  # the stream was closed by the server
        await channel.close()
    finally:
        server.kill()


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServerProcess(
            "--ads-listen",
            "127.0.0.1:0",
            "--admin-listen",
            f"127.0.0.1:{port}",
            "--store",
            f"sqlite:{tmp_path / 'store.db'}",
        )
        with pytest.raises(RuntimeError) as error:
            server.start(timeout=20)
        output = server.rest_of_output() + str(error.value)
        assert "cannot start" in output
        assert server.process is not None and server.process.returncode != 0


def test_bad_flag_values_are_refused_with_the_flag_named(tmp_path: Path) -> None:
    server = ServerProcess("--ads-listen", "nonsense")
    with pytest.raises(RuntimeError) as error:
        server.start(timeout=20)
    assert "--ads-listen" in str(error.value)
