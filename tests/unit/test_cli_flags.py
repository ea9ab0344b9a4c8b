"""The connection and output flags (``--server``, ``--token``, ``-o``) are taken before the
command and after it, by every command that talks to a server (as kubectl's and consul's are).

The server is a stand-in on a local socket that records what it was asked and answers as the
REST API would, just enough for each command.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from xds_server.cli import main

WRITE_RESULT = {"dry_run": False, "base_revision": 1, "revision": 2, "changes": [], "warnings": []}
ANSWERS: dict[tuple[str, str], Any] = {
    ("GET", "/v1/proxies"): {"items": []},
    ("GET", "/v1/routes"): {"items": [], "next_page_token": None},
    ("GET", "/v1/history"): {"items": [], "next_before_revision": None},
    ("POST", "/v1/apply"): {**WRITE_RESULT, "documents": []},
    ("POST", "/v1/rollback"): WRITE_RESULT,
}
EVENT = b'id: 1\nevent: revision\ndata: {"id": 1, "type": "revision", "revision": 2}\n\n'


class StandIn:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                outer.requests.append((self.command, path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.command == "DELETE":
                    self.send_response(204)
                    self.end_headers()
                    return
                if path == "/v1/events":
                    body, media = EVENT, "text/event-stream"
                else:
                    body, media = (
                        json.dumps(ANSWERS[self.command, path]).encode(),
                        "application/json",
                    )
                self.send_response(200)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def api() -> Iterator[StandIn]:
    stand_in = StandIn()
    thread = threading.Thread(target=stand_in.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stand_in
    finally:
        stand_in.server.shutdown()
        stand_in.server.server_close()


def commands(tmp_path: Path) -> dict[str, tuple[list[str], tuple[str, str], bool]]:
    """Each client command: its arguments, the request it makes, whether it takes ``-o``."""
    documents = tmp_path / "documents.yaml"
    documents.write_text("kind: Listener\nname: public\nspec: {port: 10000}\n")
    return {
        "status": (["status"], ("GET", "/v1/proxies"), True),
        "get": (["get", "routes"], ("GET", "/v1/routes"), True),
        "apply": (["apply", "-f", str(documents)], ("POST", "/v1/apply"), True),
        "delete": (["delete", "route", "web"], ("DELETE", "/v1/routes/web"), False),
        "history": (["history"], ("GET", "/v1/history"), True),
        "rollback": (["rollback", "1"], ("POST", "/v1/rollback"), True),
        "events": (["events", "--count", "1"], ("GET", "/v1/events"), True),
    }


COMMANDS = ["status", "get", "apply", "delete", "history", "rollback", "events"]


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_json(out: str) -> None:
    lines = out.splitlines()
    assert lines, "nothing printed"
    try:
        json.loads(out)
    except ValueError:  # events: one JSON object per line
        for line in lines:
            json.loads(line)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["before", "after"])
def test_server_token_and_output_before_or_after_the_command(
    api: StandIn, capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, where: str
) -> None:
    argv, request, takes_output = commands(tmp_path)[command]
    flags = ["--server", api.url, "--token", "secret", *(["-o", "json"] if takes_output else [])]
    code, out, err = run(capsys, [*flags, *argv] if where == "before" else [*argv, *flags])
    assert code == 0, err
    assert api.requests == [(*request, "Bearer secret")]
    if takes_output:
        assert_json(out)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_flags_after_the_command_win(
    api: StandIn, capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    argv, request, _ = commands(tmp_path)[command]
    before = ["--server", "http://127.0.0.1:9", "--token", "old"]
    code, _, err = run(capsys, [*before, *argv, "--server", api.url, "--token", "new"])
    assert code == 0, err
    assert api.requests == [(*request, "Bearer new")]


def test_output_before_the_command_and_a_table_after(
    api: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, ["-o", "json", "--server", api.url, "history"])
    assert code == 0, err
    assert json.loads(out) == []
    code, out, err = run(capsys, ["-o", "json", "--server", api.url, "history", "-o", "table"])
    assert code == 0 and out == "" and "no history yet" in err


def test_without_flags_the_environment_still_counts(
    api: StandIn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDS_SERVER_URL", api.url)
    monkeypatch.setenv("XDS_SERVER_TOKEN", "from-env")
    code, _, err = run(capsys, ["status"])
    assert code == 0, err
    code, _, err = run(capsys, ["status", "--token", "flag"])
    assert code == 0, err
    assert [auth for _, _, auth in api.requests] == ["Bearer from-env", "Bearer flag"]
