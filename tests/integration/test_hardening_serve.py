"""``xds-server serve`` hardened, end to end: two replicas sharing ``--store consul-kv:PREFIX``
on the Consul double, the admin API behind ``--admin-tokens``, and the refusal to expose an
unauthenticated admin API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy.config.listener.v3 import listener_pb2  # noqa: F401  (names_of unpacks listeners)

from tests.consul_double import ConsulDouble
from tests.support.envoy import Envoy, bootstrap, free_ports, running_envoy, wait_for
from tests.support.process import ServerProcess
from tests.support.xds_client import SotwClient, names_of, node
from xds_server.admin.middleware.auth import hash_token
from xds_server.cache.types import LISTENER

PROBLEM_JSON = "application/problem+json"


def listener(name: str = "public", port: int = 10000) -> dict[str, Any]:
    return {"kind": "Listener", "name": name, "spec": {"port": port}}


def route(hostname: str) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": "web",
        "spec": {
            "listeners": ["public"],
            "hostnames": [hostname],
            "rules": [{"backends": [{"service": "web"}]}],
        },
    }


def serve(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
    return ServerProcess(
        "--ads-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-format", "text",
        *args, env=env,
    ).start()  # fmt: skip


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble(jitter=False) as started:
        yield started


async def test_two_replicas_share_one_config_on_consul_kv(double: ConsulDouble) -> None:
    env = {"CONSUL_HTTP_ADDR": double.url}
    a = serve("--store", "consul-kv:xds/config", env=env)
    b = serve("--store", "consul-kv:xds/config", env=env)
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{b.ads_port}")
        lds = SotwClient(channel)
        async with httpx.AsyncClient(timeout=10) as http:
            await lds.request(LISTENER, node_=node("envoy-b", "default"))
            first = await lds.recv(timeout=10)
            assert names_of(first) == []
            await lds.ack(first)
            started = time.monotonic()
            put = await http.put(f"{a.admin}/v1/listeners/public", json=listener())
            assert put.status_code == 201, put.text
            # B's snapshot follows A's write: the listener reaches an Envoy on B within 1 s.
            pushed = await lds.recv(timeout=1.0)
            assert any("public" in name for name in names_of(pushed)), names_of(pushed)
            elapsed = (time.monotonic() - started) * 1000
            print(f"A's write reached B's ADS stream after {elapsed:.0f} ms")
            lds.cancel()
            await channel.close()
            started = time.monotonic()
            created = await http.put(f"{a.admin}/v1/routes/web", json=route("a.example"))
            assert created.status_code == 201, created.text
            # A write on A is served by B within a second.
            while (await http.get(f"{b.admin}/v1/routes/web")).status_code != 200:
                assert time.monotonic() - started < 1.0, "B did not see A's write in 1 s"
                await asyncio.sleep(0.01)
            print(f"replica B served A's write after {(time.monotonic() - started) * 1000:.0f} ms")
            etag = (await http.get(f"{b.admin}/v1/routes/web")).headers["etag"]
            assert etag == created.headers["etag"]

            # The same If-Match on both replicas at once: one wins, the other gets 412.
            answers = await asyncio.gather(
                http.put(
                    f"{a.admin}/v1/routes/web",
                    json=route("from-a.example"),
                    headers={"If-Match": etag},
                ),
                http.put(
                    f"{b.admin}/v1/routes/web",
                    json=route("from-b.example"),
                    headers={"If-Match": etag},
                ),
            )
            assert sorted(r.status_code for r in answers) == [200, 412], [r.text for r in answers]
            loser = next(r for r in answers if r.status_code == 412)
            assert loser.headers["content-type"] == PROBLEM_JSON

            # Consul KV goes away: writes 503, reads keep serving the last config.
            double.refuse_connections()
            failed = await http.put(f"{b.admin}/v1/routes/web", json=route("down.example"))
            assert failed.status_code == 503, failed.text
            assert failed.headers["content-type"] == PROBLEM_JSON
            assert failed.headers["retry-after"]
            for server in (a, b):
                got = await http.get(f"{server.admin}/v1/routes/web")
                assert got.status_code == 200
                assert got.json()["spec"]["hostnames"] != ["down.example"]
            double.accept_connections()
            healed = await http.put(f"{b.admin}/v1/routes/web", json=route("back.example"))
            assert healed.status_code == 200, healed.text
            started = time.monotonic()
            while (await http.get(f"{a.admin}/v1/routes/web")).json()["spec"]["hostnames"] != [
                "back.example"
            ]:
                assert time.monotonic() - started < 5.0, "A did not catch up after the outage"
                await asyncio.sleep(0.02)
    finally:
        a.kill()
        b.kill()


def active_listeners(envoy: Envoy) -> set[str]:
    """The dynamic listeners Envoy has accepted and bound (from its /config_dump)."""
    names: set[str] = set()
    for config in envoy.config_dump()["configs"]:
        if config["@type"].endswith("ListenersConfigDump"):
            for found in config.get("dynamic_listeners", []):
                if "active_state" in found and "error_state" not in found:
                    names.add(found["name"])
    return names


@pytest.mark.envoy
def test_a_write_on_either_replica_reaches_the_envoy_on_the_other(double: ConsulDouble) -> None:
    """Two replicas, each with a real Envoy attached (in groups ``ga`` and ``gb``): a listener
    for the other replica's Envoy, written on one replica, is active in that Envoy within a
    second (both ways)."""
    env = {"CONSUL_HTTP_ADDR": double.url}
    a = serve("--store", "consul-kv:xds/config", env=env)
    b = serve("--store", "consul-kv:xds/config", env=env)
    ports = free_ports(2)
    try:
        with (
            running_envoy(bootstrap(a.ads_port, node_id="envoy-a", group="ga")) as envoy_a,
            running_envoy(bootstrap(b.ads_port, node_id="envoy-b", group="gb")) as envoy_b,
            httpx.Client(timeout=10) as http,
        ):
            writes = (
                (a, envoy_b, "from-a", "gb", ports[0]),
                (b, envoy_a, "from-b", "ga", ports[1]),
            )
            for writer, envoy, name, group, port in writes:
                document = listener(name, port)
                document["spec"]["groups"] = [group]
                started = time.monotonic()
                put = http.put(f"{writer.admin}/v1/listeners/{name}", json=document)
                assert put.status_code == 201, put.text
                wait_for(lambda: name in active_listeners(envoy), 1.0, f"{name} active")  # noqa: B023
                elapsed = (time.monotonic() - started) * 1000
                print(f"{name}: active in the other replica's Envoy after {elapsed:.0f} ms")
            assert active_listeners(envoy_a) == {"from-b"}
            assert active_listeners(envoy_b) == {"from-a"}
    finally:
        a.kill()
        b.kill()


async def test_admin_tokens_from_a_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: deployer, token_sha256: {hash_token('write-me')}, role: write}}\n"
        f"  - {{name: viewer, token_sha256: {hash_token('read-me')}, role: read}}\n"
    )
    server = serve("--store", f"sqlite:{tmp_path / 'store.db'}", "--admin-tokens", str(tokens))
    try:
        async with httpx.AsyncClient(base_url=server.admin, timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code in (200, 503)
            denied = await http.get("/v1/listeners")
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"].startswith("Bearer")
            read = {"Authorization": "Bearer read-me"}
            write = {"Authorization": "Bearer write-me"}
            assert (await http.get("/v1/listeners", headers=read)).status_code == 200
            forbidden = await http.put("/v1/listeners/public", json=listener(), headers=read)
            assert forbidden.status_code == 403
            created = await http.put("/v1/listeners/public", json=listener(), headers=write)
            assert created.status_code == 201, created.text
            history = (await http.get("/v1/history", headers=read)).json()
            assert "deployer" in str(history)
            assert "anonymous" not in str(history)
    finally:
        server.kill()


def test_an_exposed_admin_api_without_tokens_does_not_start(tmp_path: Path) -> None:
    server = ServerProcess(
        "--ads-listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0",
        "--store", f"sqlite:{tmp_path / 'store.db'}",
    )  # fmt: skip
    with pytest.raises(RuntimeError):
        server.start(timeout=20)
    output = server.rest_of_output()
    assert "--admin-tokens" in output and "--insecure-admin" in output
    assert server.process is not None and server.process.returncode != 0


def test_a_replica_does_not_start_without_consul_kv(double: ConsulDouble) -> None:
    double.refuse_connections()
    server = ServerProcess(
        "--ads-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--store", "consul-kv:xds/config", env={"CONSUL_HTTP_ADDR": double.url},
    )  # fmt: skip
    with pytest.raises(RuntimeError):
        server.start(timeout=20)
    output = server.rest_of_output()
    assert "cannot start: config store unavailable: cannot reach Consul" in output, output
    assert server.process is not None and server.process.returncode == 1
