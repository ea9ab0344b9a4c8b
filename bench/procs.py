"""Processes the bench starts: each in its own process group, all stopped at exit or Ctrl-C.

The server under test (``python -m xds_server serve``), the wire baseline and Sovereign run as
subprocesses; their RSS and CPU time are sampled from ``/proc`` by a background thread.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_live: dict[int, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def stop_all() -> None:
    """Stop every process group this bench started (idempotent)."""
    with _lock:
        procs = list(_live.values())
        _live.clear()
    for proc in procs:
        _stop_group(proc)


atexit.register(stop_all)


try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # not Linux/glibc: children just outlive a killed bench
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the bench dies, even by SIGKILL (Linux).
    Only a libc call (loaded beforehand): nothing here may take a lock."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sample:
    at: float  # monotonic
    cpu: float  # seconds of CPU used so far (user + system)
    rss: int  # bytes


def read_cpu_rss(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    with open(f"/proc/{pid}/statm", "rb") as f:
        rss = int(f.read().split()[1]) * _PAGE
    return cpu, rss


class Sampler:
    """Samples a process's CPU time and RSS every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sampler-{pid}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> Sample | None:
        try:
            cpu, rss = read_cpu_rss(self.pid)
        except (OSError, ValueError, IndexError):
            return None
        s = Sample(time.monotonic(), cpu, rss)
        self.samples.append(s)
        return s

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU (% of one core) and RSS (peak, last) between two monotonic times."""
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2:
            return {
                "cpu_percent": float("nan"),
                "rss_peak_mb": float("nan"),
                "rss_mb": float("nan"),
            }
        first, last = inside[0], inside[-1]
        span = last.at - first.at
        return {
            "cpu_percent": 100.0 * (last.cpu - first.cpu) / span if span > 0 else float("nan"),
            "cpu_seconds": last.cpu - first.cpu,
            "rss_peak_mb": max(s.rss for s in inside) / 2**20,
            "rss_mb": last.rss / 2**20,
        }


def read_machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


class CpuMeter:
    """CPU used between ``start()`` and ``stop()`` by some processes and by the machine."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)
        self._at = 0.0

    def _cpu(self, pids: list[int]) -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += read_cpu_rss(pid)[0]
        return total

    def start(self) -> CpuMeter:
        self._start = {name: self._cpu(pids) for name, pids in self.pids.items()}
        self._machine = read_machine()
        self._at = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        """Per group: % of one core; ``machine_busy_percent``: % of all cores."""
        span = max(1e-9, time.monotonic() - self._at)
        out = {
            f"{name}_cpu_percent": 100.0 * (self._cpu(pids) - self._start[name]) / span
            for name, pids in self.pids.items()
        }
        busy, total = read_machine()
        out["machine_busy_percent"] = (
            100.0 * (busy - self._machine[0]) / max(1e-9, total - self._machine[1])
        )
        out["cores"] = float(os.cpu_count() or 1)
        return out


@dataclass
class Subprocess:
    """A child in its own session, its output drained to ``log``; ``ready`` parses a line."""

    args: Sequence[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)

    def start(self, ready: Callable[[str], bool] | None, timeout: float = 60.0) -> str:
        """Start; with ``ready``, wait for the first output line it accepts and return it."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            list(self.args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        with _lock:
            _live[self.proc.pid] = self.proc
        assert self.proc.stdout is not None
        out: IO[bytes] = self.proc.stdout
        found = ""
        if ready is not None:
            selector = selectors.DefaultSelector()
            selector.register(out, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while not found:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    break
                raw = out.readline()
                if not raw:
                    break
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                if ready(line):
                    found = line
            selector.close()
            if not found:
                self.stop()
                tail = "\n".join(self.lines[-30:])
                raise RuntimeError(f"{self.args[:4]} did not start:\n{tail}")
        threading.Thread(target=self._drain, args=(out,), daemon=True).start()
        return found

    def _drain(self, out: IO[bytes]) -> None:
        with open(self.log, "ab") as log:
            for line in self.lines:
                log.write(line.encode() + b"\n")
            for raw in iter(out.readline, b""):
                log.write(raw)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        _stop_group(self.proc)
        with _lock:
            _live.pop(self.proc.pid, None)


STARTUP = re.compile(r"^listening ads=(\S+):(\d+) admin=(\S+):(\d+)$")


class ServerUnderTest:
    """``python -m xds_server serve`` on ports 0, its addresses read from the start-up line."""

    def __init__(
        self,
        registry: str,
        store: str,
        log: Path,
        env: dict[str, str] | None = None,
        extra: Sequence[str] = (),
        profile: Path | None = None,
    ) -> None:
        args = [
            sys.executable,
            "-m",
            "xds_server",
            "serve",
            "--ads-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--registry",
            registry,
            "--store",
            store,
            "--log-level",
            "warning",
            *extra,
        ]
        if profile is not None:
            args = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--nonblocking",
                "--format",
                "raw",
                "--rate",
                "200",
                "--output",
                str(profile),
                "--",
                *args,
            ]
        self.process = Subprocess(args, log, env=env or {})
        self.ads = ""
        self.admin = ""
        self.sampler: Sampler | None = None
        self.profile = profile

    def start(self, timeout: float = 120.0) -> ServerUnderTest:
        line = self.process.start(lambda text: bool(STARTUP.match(text.strip())), timeout)
        match = STARTUP.match(line.strip())
        assert match is not None
        self.ads = f"{match.group(1)}:{match.group(2)}"
        self.admin = f"http://{match.group(3)}:{match.group(4)}"
        self.sampler = Sampler(self.server_pid())
        return self

    def server_pid(self) -> int:
        """The Python server's pid (under py-spy, the child of the py-spy process)."""
        if self.profile is None:
            return self.process.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
                pids = children.read_text().split()
            except OSError:
                pids = []
            if pids:
                return int(pids[0])
            time.sleep(0.05)
        return self.process.pid

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        proc = self.process.proc
        if self.profile is not None and proc is not None and proc.poll() is None:
            # py-spy writes its profile when the program it runs exits: stop the server only,
            # then (if it is still there) ask py-spy itself to finish, as Ctrl-C would.
            server = self.server_pid()
            with contextlib.suppress(ProcessLookupError):
                os.kill(server, signal.SIGTERM)
            for sig in (None, signal.SIGINT):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(60)
                if proc.poll() is not None:
                    break
        self.process.stop()


def wait_serving(ads: str, clusters: int, timeout: float = 120.0) -> float:
    """Poll ``FetchClusters`` until the server serves ``clusters`` clusters; seconds waited.

    The start-up line comes before the first snapshot is built; benchmarks start after it.
    """
    import grpc
    from envoy.service.discovery.v3 import discovery_pb2

    started = time.monotonic()
    request = discovery_pb2.DiscoveryRequest()
    request.node.id = "bench-probe"
    request.node.cluster = "default"
    with grpc.insecure_channel(
        ads, options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    ) as channel:
        fetch = channel.unary_unary(
            "/envoy.service.cluster.v3.ClusterDiscoveryService/FetchClusters",
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )
        while time.monotonic() - started < timeout:
            try:
                response = fetch(request, timeout=10)
                if len(response.resources) >= clusters:
                    return time.monotonic() - started
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"the server did not serve {clusters} clusters within {timeout} s")
