"""What a scenario runs against: a registry (static file or the Consul double) and the server."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.procs import CpuMeter, ServerUnderTest, wait_serving
from bench.workload import AdminClient, Workload, seed_store

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Context:
    """Options of one ``python -m bench`` run, shared by every scenario."""

    proxies: list[int]
    quick: bool = False
    workers: int = 2
    streams_per_channel: int = 100
    results: Path = REPO / "bench" / "results"
    profile: bool = False
    keep: bool = False
    workload: Workload = field(default_factory=Workload)
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="xds-bench-")))

    def say(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def cleanup(self) -> None:
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)


class Stack:
    """``with Stack(ctx, "static"|"consul", name) as stack:`` a registry plus a running server.

    The operator config (one listener, routes to every service) is seeded into the server's
    SQLite store before it starts, so every scenario starts from a complete config whether or
    not the REST API is there; ``stack.admin`` talks to the REST API when a scenario changes
    config.
    """

    def __init__(self, ctx: Context, registry: str, name: str) -> None:
        self.ctx = ctx
        self.kind = registry
        self.name = name
        self.dir = ctx.work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.consul: Any = None
        self.server: ServerUnderTest | None = None
        self.serving_after = 0.0

    @property
    def workload(self) -> Workload:
        return self.ctx.workload

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        w = self.workload
        env: dict[str, str] = {}
        if self.kind == "consul":
            if str(REPO) not in sys.path:
                sys.path.insert(0, str(REPO))
            from tests.consul_double import ConsulDouble

            self.consul = ConsulDouble(jitter=False, consul_service=False)
            self.consul.seed(w.services, w.endpoints)
            self.consul.start()
            registry = "consul"
            env["CONSUL_HTTP_ADDR"] = f"127.0.0.1:{self.consul.port}"
        else:
            path = self.dir / "registry.yaml"
            w.write_registry(path)
            registry = f"static:{path}"
        store = self.dir / "store.db"
        seed_store(store, w.documents())
        profile = self.ctx.results / f"profile-{self.name}.txt" if self.ctx.profile else None
        self.server = ServerUnderTest(
            registry, f"sqlite:{store}", self.dir / "server.log", env=env, profile=profile
        )
        self.server.start()
        self.serving_after = wait_serving(self.server.ads, w.services)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.consul is not None:
            with contextlib.suppress(Exception):
                self.consul.stop()
            self.consul = None

    @property
    def ads(self) -> str:
        assert self.server is not None
        return self.server.ads

    @property
    def admin(self) -> AdminClient:
        assert self.server is not None
        return AdminClient(self.server.admin)

    def window(self, start: float, end: float) -> dict[str, float]:
        assert self.server is not None and self.server.sampler is not None
        return self.server.sampler.window(start, end)

    def meter(self, simulator: list[int]) -> CpuMeter:
        """CPU of the server, the simulator workers, this process (the Consul double runs
        here) and the whole machine, from now until ``stop()``."""
        assert self.server is not None
        return CpuMeter(
            {
                "server": [self.server.server_pid()],
                "simulator": simulator,
                "bench_and_consul_double": [os.getpid()],
            }
        ).start()

    def rss_now(self, settle: float = 1.0) -> float:
        """Median RSS (MiB) over ``settle`` seconds."""
        assert self.server is not None and self.server.sampler is not None
        sampler = self.server.sampler
        start = time.monotonic()
        time.sleep(settle)
        values = sorted(s.rss for s in sampler.samples if s.at >= start)
        if not values:
            sample = sampler.sample()
            return sample.rss / 2**20 if sample else float("nan")
        return values[len(values) // 2] / 2**20

    def rewrite_registry(self, unhealthy: frozenset[tuple[int, int]]) -> float:
        """Static registry: rewrite the file with these (service, instance) unhealthy;
        returns the monotonic time just before."""
        assert self.kind == "static"
        at = time.monotonic()
        self.workload.write_registry(self.dir / "registry.yaml", unhealthy)
        return at

    def flap(self, service: int, instance: int, healthy: bool) -> float:
        """Set one Consul instance's health; returns the monotonic time just before."""
        assert self.consul is not None
        from bench.workload import service_name

        at = time.monotonic()
        self.consul.set_check(
            f"{service_name(service)}-{instance}", "passing" if healthy else "critical"
        )
        return at
