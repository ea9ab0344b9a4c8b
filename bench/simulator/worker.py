"""A worker process: a share of the fleet on its own event loop, driven over a pipe.

The parent sends ``(command, argument)`` tuples and reads one reply per command. Streams are
spread over channels (``streams_per_channel`` each, one TCP connection per channel, as
Envoys behind a few hosts would look to the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc

from bench.simulator.proxy import DeltaProxy, RestPoller, SimProxy, SotwProxy
from bench.simulator.recorder import Recorder
from bench.simulator.wire import ResourceDecoder

_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # A channel of its own per group of streams: without it gRPC shares one subchannel (one
    # TCP connection) between channels with equal arguments.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 60_000),
]

MODES = ("sotw", "delta", "rest")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    target: str  # host:port (gRPC) or http://host:port (rest)
    mode: str
    first: int  # global index of this worker's first proxy
    count: int
    streams_per_channel: int = 100
    follow: frozenset[str] = frozenset({"cds", "eds", "lds", "rds"})
    group: str = "default"
    node_prefix: str = "sim"
    seed: int = 1
    poll_interval: float = 1.0


class Worker:
    def __init__(self, conn: Connection, spec: WorkerSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.recorder = Recorder()
        self.decoder = ResourceDecoder()
        self.proxies: list[SimProxy] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.channels: list[Any] = []
        self.session: Any = None
        self.commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                self.commands.put_nowait(self.conn.recv())
        except (EOFError, OSError):
            self.commands.put_nowait(("stop", None))

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._readable)
        self.conn.send(("ready", None))
        try:
            while True:
                command, argument = await self.commands.get()
                if command == "stop":
                    await self._stop()
                    with contextlib.suppress(OSError):
                        self.conn.send(("stopped", None))
                    return
                reply = await self._handle(command, argument)
                self.conn.send((command, reply))
        finally:
            loop.remove_reader(self.conn.fileno())

    async def _handle(self, command: str, argument: Any) -> Any:
        if command == "start":
            return await self._start(*argument)
        if command == "status":
            return self._status()
        if command == "record":
            if argument:
                self.recorder.start()
            else:
                self.recorder.stop()
            return None
        if command == "latencies":
            return self.recorder.latencies(argument, [p.index for p in self.proxies])
        if command == "totals":
            return self.recorder.totals()
        if command == "results":
            return [p.summary() for p in self.proxies]
        raise ValueError(f"unknown command {command!r}")

    async def _start(self, t0: float, ramp: float) -> int:
        spec = self.spec
        rng = random.Random(spec.seed * 1_000_003 + spec.first)
        loop = asyncio.get_running_loop()
        if spec.mode == "rest":
            import aiohttp

            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                timeout=aiohttp.ClientTimeout(total=600),
            )
        else:
            n_channels = -(-spec.count // spec.streams_per_channel)
            self.channels = [
                grpc.aio.insecure_channel(spec.target, options=_CHANNEL_OPTIONS)
                for _ in range(n_channels)
            ]
        kinds: dict[str, type[SotwProxy] | type[DeltaProxy] | type[RestPoller]] = {
            "sotw": SotwProxy,
            "delta": DeltaProxy,
            "rest": RestPoller,
        }
        kind = kinds[spec.mode]
        for i in range(spec.count):
            index = spec.first + i
            proxy = kind(
                index,
                f"{spec.node_prefix}-{index:05d}",
                spec.group,
                spec.follow,
                self.recorder,
                self.decoder,
            )
            channel: Any = None
            if isinstance(proxy, RestPoller):
                proxy.configure(self.session, spec.target, spec.poll_interval)
            else:
                channel = self.channels[i // spec.streams_per_channel]
            delay = t0 + rng.uniform(0.0, ramp) - loop.time()
            self.proxies.append(proxy)
            self.tasks.append(asyncio.create_task(proxy.run(channel, delay)))
        return len(self.proxies)

    def _status(self) -> dict[str, int]:
        return {
            "proxies": len(self.proxies),
            "started": sum(1 for p in self.proxies if p.started_at),
            "responding": sum(1 for p in self.proxies if p.first_response_at),
            "synced": sum(1 for p in self.proxies if p.synced_at),
            "failed": sum(1 for p in self.proxies if p.error),
            "decoded": self.decoder.decoded,
        }

    async def _stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.close(None)
        if self.session is not None:
            await self.session.close()


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of a worker process (``multiprocessing`` spawn target)."""
    # Ctrl-C reaches the whole foreground process group: the parent stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(Worker(conn, spec).serve())
    finally:
        conn.close()
