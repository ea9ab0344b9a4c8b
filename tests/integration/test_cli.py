"""Every ``xds-server`` command, run as an operator runs it, against a running server.

The server is a subprocess (``xds-server serve``); each command is another subprocess
(``python -m xds_server …``), so what is tested is the installed command line: its
arguments, environment variables, output and exit codes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from tests.support.envoy import envoy_binary, free_port
from tests.support.process import ServerProcess
from tests.support.xds_client import SotwClient, node
from xds_server.cache.types import CLUSTER, LISTENER


class Cli:
    def __init__(self, server: str) -> None:
        self.server = server
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("XDS_SERVER_")}

    def run(
        self,
        *argv: str,
        server: str | None = None,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        prefix = ["--server", server or self.server] if server != "" else []
        return subprocess.run(
            [sys.executable, "-m", "xds_server", *prefix, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**self.env, **(env or {})},
        )

    def ok(self, *argv: str, stdin: str | None = None) -> str:
        done = self.run(*argv, stdin=stdin)
        assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def fails(self, *argv: str, code: int = 1) -> str:
        done = self.run(*argv)
        assert done.returncode == code, f"{argv}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert done.stderr.strip(), "an error without a message"
        return done.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("cli")
    registry = directory / "registry.yaml"
    registry.write_text(
        "services:\n"
        "  web:\n    endpoints:\n      - {address: 127.0.0.1, port: 9}\n"
        "  api:\n    endpoints:\n      - {address: 127.0.0.1, port: 9}\n"
    )
    process = ServerProcess(
        "--ads-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--registry",
        f"static:{registry}",
        "--store",
        f"sqlite:{directory / 'store.db'}",
        "--log-level",
        "warning",
    ).start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def cli(server: ServerProcess) -> Cli:
    return Cli(server.admin)


def revision(server: ServerProcess) -> int:
    return int(httpx.get(server.admin + "/v1/revision", timeout=5).json()["revision"])


def documents(listener: str, port: int, route: str, prefix: str = "/") -> str:
    return f"""\
kind: Listener
name: {listener}
spec: {{address: 127.0.0.1, port: {port}}}
---
kind: Route
name: {route}
spec:
  listeners: [{listener}]
  hostnames: ["{route}.example.com"]
  rules:
    - matches: [{{path: {{prefix: "{prefix}"}}}}]
      backends: [{{service: web}}]
"""


def test_apply_get_and_delete(cli: Cli, server: ServerProcess, tmp_path: Path) -> None:
    file = tmp_path / "shop.yaml"
    file.write_text(documents("shop", 18081, "shop"))
    out = cli.ok("apply", "-f", str(file))
    lines = out.splitlines()
    assert lines[:2] == ["Listener/shop created", "Route/shop created"]
    assert lines[2] == f"revision {revision(server)}"
    assert cli.ok("apply", "-f", str(file)).splitlines()[-1].endswith("(nothing changed)")

    # A dry run tells what would change and saves nothing.
    before = revision(server)
    file.write_text(documents("shop", 18081, "shop", prefix="/api"))
    out = cli.ok("apply", "-f", str(file), "--dry-run")
    assert "(dry run) Route/shop would be updated" in out.splitlines()
    assert "(dry run) Listener/shop unchanged" in out.splitlines()
    assert revision(server) == before

    # get: a table, one document as JSON, every document as YAML that apply takes back.
    table = cli.ok("get", "routes").splitlines()
    assert table[0].split()[:4] == ["NAME", "REVISION", "UPDATED", "WARNINGS"]
    (row,) = [line for line in table if line.startswith("shop ")]
    assert "shop.example.com -> web" in row
    one = json.loads(cli.ok("get", "route", "shop", "-o", "json"))
    assert one["kind"] == "Route" and one["name"] == "shop"
    assert one["spec"]["rules"][0]["matches"][0]["path"] == {"prefix": "/"}
    exported = cli.ok("get", "Route", "-o", "yaml")
    assert [d["name"] for d in yaml.safe_load_all(exported)] == ["shop"]
    assert "Route/shop unchanged" in cli.ok("apply", "-f", "-", stdin=exported)
    listeners = json.loads(cli.ok("get", "listeners", "-o", "json"))
    assert [d["name"] for d in listeners] == ["shop"]

    # JSON files are applied as JSON.
    as_json = tmp_path / "retry.json"
    as_json.write_text(
        json.dumps([{"kind": "RetryPolicy", "name": "shop-retry", "spec": {"num_retries": 3}}])
    )
    assert "RetryPolicy/shop-retry created" in cli.ok("apply", "-f", str(as_json))
    assert json.loads(cli.ok("get", "retry-policy", "shop-retry", "-o", "json"))["spec"] == {
        "num_retries": 3
    }

    # delete: refused while referenced, with the referrer named; then in order.
    refused = cli.fails("delete", "listener", "shop")
    assert "Still referenced (409)" in refused and "Route/shop" in refused
    assert cli.ok("delete", "route", "shop").startswith("Route/shop deleted (revision ")
    assert cli.ok("delete", "listeners", "shop").startswith("Listener/shop deleted")
    missing = cli.fails("get", "route", "shop")
    assert missing.splitlines() == ["error: Not Found (404): there is no Route named 'shop'"]
    assert "(404)" in cli.fails("delete", "route", "shop")
    assert cli.ok("delete", "retry-policies", "shop-retry", "--dry-run").startswith("(dry run)")
    assert json.loads(cli.ok("get", "retry-policy", "shop-retry", "-o", "json"))["name"]


def test_bad_input_names_the_field_and_the_reason(cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(documents("bad", 99999, "bad").replace("[bad]", "[elsewhere]"))
    error = cli.fails("apply", "-f", str(file))
    lines = error.splitlines()
    assert lines[0].startswith("error: Invalid document (422): ")
    assert "  [0] Listener/bad spec.port: Input should be less than or equal to 65535" in lines

    file.write_text(documents("good", 18082, "bad").replace("[good]", "[elsewhere]"))
    error = cli.fails("apply", "-f", str(file))
    assert "  [1] Route/bad spec.listeners[0]: no listener 'elsewhere'" in error.splitlines()

    file.write_text("kind: Listener\nname: x\nspec:\n  port: [1\n")
    error = cli.fails("apply", "-f", str(file))
    assert "error: Bad Request (400): " in error and "(line 5, column 1)" in error

    assert "unknown kind 'gizmos'" in cli.fails("get", "gizmos", code=2)
    assert "cannot read" in cli.fails("apply", "-f", str(tmp_path / "none.yaml"), code=2)
    usage = cli.fails("rollback", "minus-one", code=2)
    assert "REVISION" in usage or "revision" in usage


def test_history_and_rollback(cli: Cli, server: ServerProcess, tmp_path: Path) -> None:
    file = tmp_path / "hist.yaml"
    file.write_text(documents("hist", 18083, "hist"))
    cli.ok("apply", "-f", str(file))
    first = revision(server)
    file.write_text(documents("hist", 18083, "hist", prefix="/v2"))
    cli.ok("apply", "-f", str(file))
    second = revision(server)
    assert second == first + 1

    table = cli.ok("history", "--kind", "routes", "--name", "hist").splitlines()
    assert table[0].split() == ["REVISION", "TIME", "ACTOR", "OPERATION", "DOCUMENT", "NOTE"]
    assert [line.split()[0] for line in table[1:]] == [str(second), str(first)]
    assert table[1].split()[3:5] == ["update", "Route/hist"]
    entries = json.loads(cli.ok("history", "--limit", "1", "-o", "json"))
    assert entries[0]["revision"] == second

    dry = cli.ok("rollback", str(first), "--dry-run")
    assert "(dry run) Route/hist updated" in dry and revision(server) == second
    out = cli.ok("rollback", str(first), "--note", "back to /")
    assert out.splitlines()[-1] == f"restored revision {first} as revision {second + 1}"
    route = json.loads(cli.ok("get", "route", "hist", "-o", "json"))
    assert route["spec"]["rules"][0]["matches"][0]["path"] == {"prefix": "/"}
    latest = json.loads(cli.ok("history", "--limit", "1", "-o", "json"))[0]
    assert latest["note"] == f"rollback to {first}: back to /"

    error = cli.fails("rollback", "100000")
    assert "revision 100000 does not exist" in error and "  revision: " in error


async def test_status_shows_every_proxy_and_each_type(cli: Cli, server: ServerProcess) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.ads_port}")
    good, bad = SotwClient(channel), SotwClient(channel)
    try:
        await good.request(CLUSTER, node_=node("cli-good", "edge"))
        await good.ack(await good.recv())
        await good.request(LISTENER)
        await good.ack(await good.recv())
        await bad.request(CLUSTER, node_=node("cli-bad", "mesh"))
        await bad.nack(await bad.recv(), "cluster 'x': rejected for the test")
        await bad.request(LISTENER)
        await bad.recv()
        await good.request(LISTENER)  # a sentinel: the ACK before it has been read
        table = (await asyncio.to_thread(cli.ok, "status")).splitlines()
        header = table[0].split()
        assert header == [
            "NODE",
            "GROUP",
            "CONNECTED",
            "STREAM",
            "ENVOY",
            "CDS",
            "EDS",
            "LDS",
            "RDS",
            "SDS",
        ]
        rows = {line.split()[0]: line.split() for line in table[1:]}
        assert rows["cli-good"][1:4] == ["edge", "yes", "ads-sotw"]
        assert rows["cli-good"][-5:] == ["SYNCED", "-", "SYNCED", "-", "-"]
        assert rows["cli-bad"][-5:] == ["NACKED", "-", "STALE", "-", "-"]

        detail = await asyncio.to_thread(cli.ok, "status", "cli-bad")
        assert detail.startswith("cli-bad (group mesh, Envoy ")
        assert "CDS NACK of " in detail and "cluster 'x': rejected for the test" in detail
        as_json = json.loads(await asyncio.to_thread(cli.ok, "status", "-o", "json"))
        assert {p["node_id"] for p in as_json} >= {"cli-good", "cli-bad"}
        missing = await asyncio.to_thread(cli.fails, "status", "nobody")
        assert "(404)" in missing and "nobody" in missing
    finally:
        good.cancel()
        bad.cancel()
        await channel.close()


def test_validate_works_without_a_server(cli: Cli, tmp_path: Path) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    good = tmp_path / "good.yaml"
    good.write_text(documents("v", 18090, "v"))
    done = cli.run("validate", "-f", str(good), server=unreachable)
    assert done.returncode == 0 and done.stdout == f"{good}: 2 documents valid\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(documents("v", 18090, "v").replace("listeners: [v]", "listeners: [w]"))
    done = cli.run("validate", "-f", str(bad), server=unreachable)
    assert done.returncode == 1
    assert "  [1] Route/v spec.listeners[0]: no listener 'w'" in done.stderr.splitlines()


def test_an_unreachable_server_is_one_clear_line(cli: Cli) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    for done in (
        cli.run("get", "routes", server=address),
        cli.run("status", server="", env={"XDS_SERVER_URL": address}),
    ):
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr == (
            f"error: cannot reach the xds-server at {address}: connection refused "
            "(is it running? set --server or XDS_SERVER_URL)\n"
        )
    assert "is not an http:// or https:// URL" in cli.fails(
        "--server", "localhost:8080", "status", code=2
    )


def test_the_server_is_named_before_or_after_the_command(cli: Cli, server: ServerProcess) -> None:
    """``xds-server status --server URL`` works as ``xds-server --server URL status`` does."""
    after = cli.run("status", "--server", server.admin, "-o", "json", server="")
    before = cli.run("--server", server.admin, "-o", "json", "status", server="")
    assert after.returncode == before.returncode == 0, (after.stderr, before.stderr)
    assert isinstance(json.loads(after.stdout), list)
    assert json.loads(after.stdout) == json.loads(before.stdout)


def test_apply_a_directory_tours_every_example(tmp_path: Path) -> None:
    """``xds-server apply -f api/examples/``: every file, in one revision (a server of its
    own: the examples' documents would change what the other tests see)."""
    examples = Path(__file__).resolve().parents[2] / "api" / "examples"
    process = ServerProcess.local(tmp_path / "store.db").start()
    try:
        out = Cli(process.admin).ok("apply", "-f", str(examples))
    finally:
        process.kill()
    assert out.splitlines()[-1] == "revision 1"
    for kind, name in {
        (doc["kind"], doc["name"])
        for file in examples.glob("*.yaml")
        for doc in yaml.safe_load_all(file.read_text())
        if doc is not None
    }:
        assert f"{kind}/{name} created" in out


class RecordingApi:
    """A stand-in server that records the Authorization header and answers 401 to a bad
    token with problem details."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                api.authorizations.append(auth)
                if auth == "Bearer good":
                    body, status, media = b'{"items": []}', 200, "application/json"
                else:
                    problem = {
                        "type": "urn:xds-server:problem:unauthorized",
                        "title": "Unauthorized",
                        "status": 401,
                        "detail": "a valid bearer token is required",
                        "errors": [],
                    }
                    body, status, media = (
                        json.dumps(problem).encode(),
                        401,
                        "application/problem+json",
                    )
                self.send_response(status)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def test_the_token_is_sent_as_a_bearer_token(cli: Cli) -> None:
    api = RecordingApi()
    api.thread.start()
    try:
        # --token is taken before the command and after it (like kubectl's flags).
        for argv in (("status", "--token", "good"), ("--token", "good", "status")):
            done = cli.run(*argv, server=api.url)
            assert done.returncode == 0 and done.stdout == "", argv
        done = cli.run("status", server=api.url, env={"XDS_SERVER_TOKEN": "good"})
        assert done.returncode == 0 and "no proxies" in done.stderr
        refused = cli.run("status", server=api.url, env={"XDS_SERVER_TOKEN": "bad"})
        assert refused.returncode == 1
        assert refused.stderr.splitlines() == [
            "error: Unauthorized (401): a valid bearer token is required",
            "  (send a token with --token or XDS_SERVER_TOKEN)",
        ]
    finally:
        api.server.shutdown()
        api.server.server_close()
    assert api.authorizations == ["Bearer good", "Bearer good", "Bearer good", "Bearer bad"]


@pytest.mark.envoy
def test_a_tls_bootstrap_passes_envoys_validation(cli: Cli, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client = ca.issue_cert("envoy-1")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "envoy.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "envoy-key.pem"))
    printed = cli.ok(
        "bootstrap",
        "--node-id",
        "envoy-1",
        "--group",
        "edge",
        "--ads",
        "127.0.0.1:18000",
        "--ca",
        str(tmp_path / "ca.pem"),
        "--cert",
        str(tmp_path / "envoy.pem"),
        "--key",
        str(tmp_path / "envoy-key.pem"),
        "--sni",
        "xds.internal",
    )
    config = tmp_path / "bootstrap.yaml"
    config.write_text(printed)
    checked = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--log-level", "warning"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_events_follows_the_event_stream(cli: Cli, server: ServerProcess) -> None:
    lines = cli.ok("events", "--since", "0", "--count", "3", "-o", "json").splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["id"] for e in events] == [1, 2, 3]
    # What happens at start-up (the order of the three depends on timing).
    assert {e["type"] for e in events} == {"revision", "source_ready", "snapshot"}
    assert next(e for e in events if e["type"] == "revision")["revision"] == 0
    (line,) = cli.ok("events", "--since", "0", "--types", "snapshot", "--count", "1").splitlines()
    fields = line.split()
    assert fields[2] == "snapshot" and "generation=1" in fields
    error = cli.fails("events", "--types", "bogus")
    assert "query.types: unknown event type(s) bogus" in error


def test_the_one_mesh_document_has_no_name_to_give(cli: Cli, tmp_path: Path) -> None:
    file = tmp_path / "mesh.yaml"
    file.write_text("kind: Mesh\nname: mesh\nspec: {trust_domain: cli.example.com}\n")
    assert "Mesh/mesh created" in cli.ok("apply", "-f", str(file))
    try:
        shown = json.loads(cli.ok("get", "mesh", "-o", "json"))
        assert shown["kind"] == "Mesh" and shown["spec"]["trust_domain"] == "cli.example.com"
        assert json.loads(cli.ok("get", "mesh", "mesh", "-o", "json"))["name"] == "mesh"
        assert "one Mesh, named 'mesh'" in cli.fails("get", "mesh", "other", code=2)
        assert "mesh" in cli.ok("get", "mesh")  # the table
    finally:
        assert cli.ok("delete", "mesh").startswith("Mesh/mesh deleted")
    assert "(404)" in cli.fails("get", "mesh")
    assert "give its name" in cli.fails("delete", "route", code=2)
