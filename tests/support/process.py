"""Run ``xds-server serve`` as a subprocess and learn its addresses from the start-up line."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
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
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    @classmethod
    def local(
        cls,
        store: Path,
        registry: str = "static:",
        *extra: str,
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        """A server on free loopback ports (ADS and admin) over a SQLite store at ``store``."""
        return cls(
            "--ads-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--registry",
            registry,
            "--store",
            f"sqlite:{store}",
            *extra,
            env=env,
        )

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=self.cwd,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:
                break  # the process closed its output: it exited
            match = STARTUP.match(line.strip())
            if match:
                self.ads_port = int(match.group(2))
                self.admin_port = int(match.group(4))
                return self
        self.kill()
        raise RuntimeError("xds-server did not start:\n" + self.rest_of_output())

    def _read(self) -> None:
        """Collect every output line (a thread, so a full pipe never blocks the server)."""
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put(None)

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
        """Everything the process printed; stops it first if it still runs."""
        self.kill()
        if self._reader is not None:
            self._reader.join(10)
        return "".join(self.output)
