"""The README's curl walkthrough runs, verbatim, against a live server (no drift)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def blocks_between(marker: str) -> list[str]:
    """The ``sh`` blocks between ``<!-- {marker}:start -->`` and ``<!-- {marker}:end -->``."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"<!-- {marker}:start -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def walkthrough() -> list[str]:
    return blocks_between("walkthrough")


@contextmanager
def live_server(tmp_path: Path, registry_yaml: str) -> Iterator[str]:
    """A server over ``registry_yaml``; yields its admin address."""
    assert shutil.which("curl"), "curl is needed (.ci/run installs it)"
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml)
    server = ServerProcess.local(
        tmp_path / "store.db", f"static:{registry}", "--log-level", "warning"
    ).start()
    try:
        yield f"127.0.0.1:{server.admin_port}"
    finally:
        server.kill()


def run_verbatim(blocks: list[str], address: str) -> str:
    """The blocks as one bash script against ``address``; its output (it must succeed)."""
    script = "set -euo pipefail\n" + "\n".join(blocks).replace("localhost:8080", address)
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    return result.stdout


def test_the_walkthrough_has_every_resource() -> None:
    script = "\n".join(walkthrough())
    for path in (
        "listeners",
        "routes",
        "retry-policies",
        "service-policies",
        "apply",
        "history",
        "rollback",
        "readyz",
    ):
        assert f"/{path}" in script, path


def test_the_readme_walkthrough_runs_against_a_live_server(tmp_path: Path) -> None:
    registry = "services:\n  web:\n    endpoints:\n      - {address: 127.0.0.1, port: 8081}\n"
    with live_server(tmp_path, registry) as address:
        blocks = walkthrough()
        assert len(blocks) >= 6
        output = run_verbatim(blocks, address)
        assert re.search(r"(?<![0-9])412\n", output)  # the stale If-Match
        assert "RE2" in output or "regex" in output  # the refused regex, named
        # The walkthrough really changed the config: the rollback is the newest revision.
        history = httpx.get(f"http://{address}/v1/history", params={"limit": 1}).json()
        assert history["items"][0]["note"] == "rollback to 2"


def test_the_readme_mesh_walkthrough_runs_against_a_live_server(tmp_path: Path) -> None:
    registry = (
        "services:\n"
        "  api:\n    endpoints:\n"
        "      - {address: 127.0.0.1, port: 8080, sidecar_port: 21000}\n"
        "  frontend:\n    endpoints:\n"
        "      - {address: 127.0.0.1, port: 8081, sidecar_port: 21001}\n"
    )
    with live_server(tmp_path, registry) as address:
        blocks = blocks_between("mesh-walkthrough")
        assert len(blocks) >= 5
        output = run_verbatim(blocks, address)
        assert re.search(r"(?<![0-9])422\n", output)  # the looping intention
        assert "node:" in output and "cluster: api" in output  # the bootstrap
        assert "PRIVATE KEY" not in output
        # The walkthrough really made a mesh: both services hold an identity from one CA.
        mesh = httpx.get(f"http://{address}/v1/mesh").json()
        issued = {i["service"]: i for i in mesh["status"]["identities"]}
        assert set(issued) == {"api", "frontend"}
        assert issued["frontend"]["spiffe_id"] == "spiffe://mesh.example.com/service/frontend"
        fingerprint = mesh["status"]["ca"]["fingerprint_sha256"]
        assert {i["ca_fingerprint_sha256"] for i in issued.values()} == {fingerprint}
        assert httpx.get(f"http://{address}/v1/intentions/loop").status_code == 404
