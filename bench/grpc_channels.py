"""``python -m bench.grpc_channels [--channels 200] [--workers 8]``: proxyless gRPC at scale.

Real grpcio ``xds:///echo`` channels, spread over worker processes (grpcio shares one xDS
client per process: ``--workers`` ADS streams), against an xds-server with a static
registry of three grpcio echo servers. Two figures, written to ``bench/results/grpc.json``:

- **resolve**: from the moment every worker has imported grpcio and opens its channels, the
  time until every channel has had its first answer (xDS resolved, connected);
- **leave**: one instance is removed from the registry; per channel, the time from the
  server's push of the new endpoints to that channel's process (its EDS ``sent_at``) to the
  channel's last call answered by the removed instance: p50/p99/max over channels (<= 0:
  no call reached it after the push). The registry file watch adds its own delay before the
  push; that is reported apart (``push_after_write``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import httpx

RESULTS = Path(__file__).resolve().parent / "results" / "grpc.json"
_LISTENING = re.compile(r"listening ads=(\S+):(\d+) admin=(\S+):(\d+)")


def _echo(name: str) -> tuple[grpc.Server, int]:
    def say(request: bytes, context: grpc.ServicerContext) -> bytes:
        return name.encode()

    server = grpc.server(ThreadPoolExecutor(max_workers=16))
    handler = grpc.method_handlers_generic_handler(
        "pkg.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _registry(ports: list[int]) -> str:
    lines = ["services:", "  echo:", "    endpoints:"]
    lines += [f"      - {{address: 127.0.0.1, port: {port}}}" for port in ports]
    return "\n".join(lines) + "\n"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# -- a worker: CHANNELS channels calling until stdin closes ----------------------------------


def worker(channels: int) -> None:
    print(json.dumps({"started": time.time()}), flush=True)
    stop = threading.Event()
    last: dict[int, dict[str, float]] = {}
    ready: dict[int, float] = {}
    lock = threading.Lock()

    def run(index: int) -> None:
        channel = grpc.insecure_channel("xds:///echo")
        call: Any = channel.unary_unary("/pkg.Echo/Say")
        try:
            call(b"ready", timeout=60, wait_for_ready=True)
            with lock:
                ready[index] = time.time()
                # One write per line, under the lock: threads' lines must not interleave.
                sys.stdout.write(json.dumps({"ready": index, "at": ready[index]}) + "\n")
                sys.stdout.flush()
            while not stop.is_set():
                try:
                    answer = call(b"x", timeout=2).decode()
                    with lock:
                        last.setdefault(index, {})[answer] = time.time()
                except grpc.RpcError:
                    pass
                stop.wait(0.02)
        finally:
            channel.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(channels)]
    for thread in threads:
        thread.start()
    sys.stdin.read()
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    print(json.dumps({"last": last}), flush=True)


# -- the run -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    echoes = [_echo(name) for name in ("a", "b", "c")]
    ports = [port for _, port in echoes]
    registry = workdir / "registry.yaml"
    registry.write_text(_registry(ports))
    server = subprocess.Popen(
        [
            *[sys.executable, "-m", "xds_server", "serve", "--ads-listen", "127.0.0.1:0"],
            *["--admin-listen", "127.0.0.1:0", "--registry", f"static:{registry}"],
            *["--store", f"sqlite:{workdir / 'store.db'}", "--log-format", "text"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workers: list[subprocess.Popen[str]] = []
    try:
        assert server.stdout is not None
        for line in server.stdout:
            match = _LISTENING.search(line)
            if match:
                ads, admin = int(match.group(2)), f"http://127.0.0.1:{match.group(4)}"
                break
        threading.Thread(target=server.stdout.read, daemon=True).start()  # drain
        per_worker = [args.channels // args.workers] * args.workers
        for index in range(args.channels % args.workers):
            per_worker[index] += 1
        lines: list[list[dict[str, Any]]] = [[] for _ in per_worker]
        for index, count in enumerate(per_worker):
            bootstrap = workdir / f"bootstrap-{index}.json"
            bootstrap.write_text(
                subprocess.check_output(
                    [
                        *[sys.executable, "-m", "xds_server", "bootstrap", "--grpc"],
                        *["--node-id", f"bench-grpc-{index}", "--ads", f"127.0.0.1:{ads}"],
                    ],
                    text=True,
                )
            )
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.grpc_channels", "--worker", str(count)],
                env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap)},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            workers.append(process)

            def read(
                process: subprocess.Popen[str] = process, out: list[Any] = lines[index]
            ) -> None:
                assert process.stdout is not None
                for text in process.stdout:
                    out.append(json.loads(text))

            threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 120
        while sum(1 for w in lines for x in w if "ready" in x) < args.channels:
            if time.monotonic() > deadline:
                raise TimeoutError("channels not resolved within 120 s")
            time.sleep(0.05)
        started = max(x["started"] for w in lines for x in w if "started" in x)
        resolved = max(x["at"] for w in lines for x in w if "ready" in x)

        def eds(i: int) -> dict[str, Any]:
            found: dict[str, Any] = httpx.get(f"{admin}/v1/proxies/bench-grpc-{i}").json()
            return dict(found["types"]["EDS"])

        before = {i: eds(i)["sent_version"] for i in range(args.workers)}
        written = time.time()
        registry.write_text(_registry(ports[:2]))  # instance c leaves
        pushed: dict[int, float] = {}
        deadline = time.monotonic() + 60
        while len(pushed) < args.workers and time.monotonic() < deadline:
            for i in range(args.workers):
                now = eds(i)
                if now["sent_version"] != before[i] and now["acked_version"] == now["sent_version"]:
                    pushed.setdefault(i, _epoch(now["sent_at"]))
            time.sleep(0.05)
        time.sleep(2.0)  # let every channel make calls well after the push
        for process in workers:
            assert process.stdin is not None
            process.stdin.close()
        for process in workers:
            process.wait(timeout=30)
        time.sleep(0.2)
        after_push: list[float] = []
        for i, out in enumerate(lines):
            [last] = [x["last"] for x in out if "last" in x]
            for per_channel in last.values():
                if "c" in per_channel:
                    after_push.append(per_channel["c"] - pushed[i])
        result = {
            "channels": args.channels,
            "workers": args.workers,
            "resolve_s": round(resolved - started, 3),
            "push_after_write_s": round(max(pushed.values()) - written, 3),
            "leave_last_call_after_push_s": {
                "p50": round(_percentile(after_push, 0.5), 3),
                "p99": round(_percentile(after_push, 0.99), 3),
                "max": round(max(after_push), 3),
                "mean": round(statistics.fmean(after_push), 3),
            },
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "grpcio": grpc.__version__,
        }
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
        server.terminate()
        server.wait(timeout=10)
        for echo, _ in echoes:
            echo.stop(None)


if __name__ == "__main__":
    sys.exit(main())
