"""The static registry drives a real Envoy; a wrong Consul token is a clear, non-fatal error."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.consul_double import ConsulDouble
from tests.support import seed
from tests.support.envoy import bootstrap, free_port, http_get, running_envoy, wait_for
from tests.support.process import ServerProcess
from tests.support.upstream import upstreams

pytestmark = pytest.mark.envoy


def registry_yaml(*ports: int) -> str:
    lines = ["services:", "  web:", "    endpoints:"]
    lines += [f"      - {{address: 127.0.0.1, port: {port}}}" for port in ports]
    return "\n".join(lines) + "\n"


def readyz(server: ServerProcess) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(server.admin + "/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_editing_the_registry_file_reaches_envoy_and_a_broken_file_loses_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    registry = tmp_path / "registry.yaml"
    store = tmp_path / "store.db"
    seed.seed_store(store, [seed.listener("public", port), seed.route("web", "public", "web")])
    with upstreams("one", "two") as (one, two):
        registry.write_text(registry_yaml(one.port))
        server = ServerProcess.local(store, f"static:{registry}", "--log-format", "text").start()
        try:
            with running_envoy(bootstrap(server.ads_port)) as envoy:
                wait_for(lambda: http_get(port)[1] == "one", 30, "traffic", envoy.check_alive)
                started = time.monotonic()
                registry.write_text(registry_yaml(two.port))  # move web to the other instance
                wait_for(
                    lambda: {http_get(port)[1] for _ in range(5)} == {"two"},
                    10,
                    "the edited registry in Envoy",
                    envoy.check_alive,
                )
                print(f"registry edit -> Envoy: {(time.monotonic() - started) * 1000:.0f} ms")

                registry.write_text("services:\n  web:\n    endpoints:\n      - {port: [}\n")
                wait_for(
                    lambda: readyz(server)[1]["checks"]["registry"]["detail"] != "synced",  # type: ignore[index]
                    10,
                    "the broken file to be reported",
                )
                detail = readyz(server)[1]["checks"]["registry"]["detail"]  # type: ignore[index]
                print(f"broken registry reported as: {detail}")
                assert "line 4" in str(detail)
                # Nothing lost: Envoy still reaches the last good instance.
                assert {http_get(port)[1] for _ in range(10)} == {"two"}
        finally:
            output = server.rest_of_output()
    assert "line 4" in output  # the log names the line too


def test_a_wrong_consul_token_is_one_clear_error_and_not_ready(tmp_path: Path) -> None:
    with ConsulDouble(acl_token="the-right-token") as consul:
        consul.register("web", "127.0.0.1", 8081)
        server = ServerProcess.local(
            tmp_path / "store.db",
            "consul",
            "--log-format",
            "text",
            env={
                "CONSUL_HTTP_ADDR": f"127.0.0.1:{consul.port}",
                "CONSUL_HTTP_TOKEN": "a-wrong-token",
            },
        ).start()
        try:
            consul.wait_for_requests("/v1/", 6, timeout=10)  # several denied attempts
            status, body = readyz(server)
            assert status == 503
            assert "ACL" in json.dumps(body)
            assert server.process is not None and server.process.poll() is None  # no crash
            assert consul.tokens_seen and set(consul.tokens_seen) == {"a-wrong-token"}
        finally:
            output = server.rest_of_output()
    acl_lines = [line for line in output.splitlines() if "ACL" in line]
    print("\n".join(acl_lines))
    assert len(acl_lines) == 1  # one clear line, not one per retry
