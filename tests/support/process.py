"""Run ``xds-server serve`` as a subprocess and learn its addresses from the start-up line."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path

STARTUP = re.compile(r"^listening ads=(\S+):(\d+) admin=(\S+):(\d+)$")


class ServerProcess:
    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.args = [sys.executable, "-m", "xds_server", "serve", *args]
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen[str] | None = None
        self.ads_port = 0
        self.admin_port = 0
        self.output: list[str] = []

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=self.cwd,
        )
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not selector.select(deadline - time.monotonic()):
                break
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = STARTUP.match(line.strip())
            if match:
                self.ads_port = int(match.group(2))
                self.admin_port = int(match.group(4))
                return self
        self.kill()
        raise RuntimeError("xds-server did not start:\n" + "".join(self.output))

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def rest_of_output(self) -> str:
        if self.process is not None and self.process.stdout is not None:
            if self.process.poll() is None:
                self.kill()
            self.output.append(self.process.stdout.read())
        return "".join(self.output)
