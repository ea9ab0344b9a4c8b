"""Run ``demo/sample_service.py`` as a subprocess and talk to it (no proxy, 127.0.0.1 only)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "demo" / "sample_service.py"
LISTENING = re.compile(r"^listening (\d+)$")

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(
    url: str, method: str = "GET", data: bytes | None = None, timeout: float = 10.0
) -> tuple[int, str, dict[str, str]]:
    """``(status, body, headers)``; HTTP errors are answers too."""
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace"), dict(error.headers)


def call_json(url: str, method: str = "GET") -> tuple[int, Any]:
    status, body, _ = call(url, method)
    return status, json.loads(body)


def read_line(
    process: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float
) -> tuple[str, str]:
    """The first stdout line matching ``pattern``, and what was read after it.

    Reads the pipe with ``os.read`` (not ``readline``, whose buffer would hide lines from
    ``select``); lines before the match are skipped.
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    text = ""
    try:
        while (left := deadline - time.monotonic()) > 0 and selector.select(left):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text += chunk.decode(errors="replace")
            lines = text.split("\n")
            for index, line in enumerate(lines[:-1]):
                if pattern.search(line):
                    return line, "\n".join(lines[index + 1 :])
    finally:
        selector.close()
    raise RuntimeError(f"no line matching {pattern.pattern!r} in {timeout}s; got:\n{text}")


class SampleService:
    """``sample_service.py ARGS`` on 127.0.0.1, port 0 unless given."""

    def __init__(self, *args: str) -> None:
        if "--port" not in args:
            args = (*args, "--port", "0")
        self.args = [sys.executable, str(SAMPLE), *args]
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        #: stdout read together with the ``listening PORT`` line.
        self.early_output = ""

    def start(self, timeout: float = 15.0) -> SampleService:
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            line, self.early_output = read_line(self.process, LISTENING, timeout)
            match = LISTENING.match(line)
            assert match is not None
            self.port = int(match[1])
        except Exception:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)  # it may be exiting by itself (EOF came first)
            self.kill()
            raise
        return self

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, str, str]:
        """Send ``signum``; return the exit code and the rest of stdout and stderr."""
        assert self.process is not None
        self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, self.early_output + out, err

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate()

    def __enter__(self) -> SampleService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
