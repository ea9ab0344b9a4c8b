"""The README's curl walkthrough runs, verbatim, against a live server (no drift)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx

from tests.support.process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- walkthrough:start -->", 1)[1].split("<!-- walkthrough:end -->", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


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
    assert shutil.which("curl"), "curl is needed (.ci/run installs it)"
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "services:\n  web:\n    endpoints:\n      - {address: 127.0.0.1, port: 8081}\n"
    )
    server = ServerProcess.local(
        tmp_path / "store.db", f"static:{registry}", "--log-level", "warning"
    ).start()
    try:
        blocks = walkthrough()
        assert len(blocks) >= 6
        address = f"127.0.0.1:{server.admin_port}"
        script = "set -euo pipefail\n" + "\n".join(blocks).replace("localhost:8080", address)
        result = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        print(result.stdout[-3000:])
        assert result.returncode == 0, result.stderr + result.stdout[-2000:]
        assert re.search(r"(?<![0-9])412\n", result.stdout)  # the stale If-Match
        assert "RE2" in result.stdout or "regex" in result.stdout  # the refused regex, named
        # The walkthrough really changed the config: the rollback is the newest revision.
        history = httpx.get(f"http://{address}/v1/history", params={"limit": 1}).json()
        assert history["items"][0]["note"] == "rollback to 2"
    finally:
        server.kill()
