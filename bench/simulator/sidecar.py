"""Simulated mesh sidecars: SotW ADS proxies that also follow SDS, one proxy group each.

A sidecar is modelled on what Envoy does with the mesh's resources: CDS → EDS as the plain
simulated proxy (``bench.simulator.proxy``), then LDS; the SDS secrets that clusters and
listeners name in their TLS contexts (the identity and the trust bundle) are requested by
name as they appear, and ACKed like everything else. Proxy ``i`` is node ``<prefix>-i`` in
the group ``group_of(i)`` (one group per service, the default of a ``Sidecar``).

Every distinct identity secret a sidecar receives is one *identity change* (the first issue,
then one per renewal); the worker answers the fleet's ``identity`` question with how many
sidecars hold every secret they need, and how many have seen at least ``r`` changes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2

from bench.simulator.fleet import Fleet
from bench.simulator.proxy import SotwProxy, TypeTrack, now
from bench.simulator.wire import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    SHORT,
    SOTW_METHOD,
    DiscoveryResponse,
    names_block,
    node_bytes,
    sotw_request,
)
from bench.simulator.worker import _CHANNEL_OPTIONS, Worker, WorkerSpec

SECRET: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_TLS: Final = {
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext": tls_pb2.DownstreamTlsContext,
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext": tls_pb2.UpstreamTlsContext,
}
IDENTITY_PREFIX: Final = "mesh/identity/"
FOLLOW: Final = frozenset({"cds", "eds", "lds"})


def _sds_names(socket: Any) -> tuple[str, ...]:
    """The SDS secret names a transport socket's TLS context refers to."""
    kind = _TLS.get(socket.typed_config.type_url.rsplit("/", 1)[-1])
    if kind is None:
        return ()
    common = kind.FromString(socket.typed_config.value).common_tls_context
    names = [c.name for c in common.tls_certificate_sds_secret_configs]
    combined = common.combined_validation_context
    if combined.HasField("validation_context_sds_secret_config"):
        names.append(combined.validation_context_sds_secret_config.name)
    if common.HasField("validation_context_sds_secret_config"):
        names.append(common.validation_context_sds_secret_config.name)
    return tuple(names)


@dataclass(frozen=True, slots=True)
class _Refs:
    name: str
    eds: tuple[str, ...]
    sds: tuple[str, ...]


def _cluster_refs(value: bytes) -> _Refs:
    cluster = cluster_pb2.Cluster.FromString(value)
    eds: tuple[str, ...] = ()
    if cluster.type == cluster_pb2.Cluster.EDS:
        eds = (cluster.eds_cluster_config.service_name or cluster.name,)
    sds = _sds_names(cluster.transport_socket) if cluster.HasField("transport_socket") else ()
    return _Refs(cluster.name, eds, sds)


def _listener_refs(value: bytes) -> _Refs:
    listener = listener_pb2.Listener.FromString(value)
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    sds = tuple(
        name
        for chain in chains
        if chain.HasField("transport_socket")
        for name in _sds_names(chain.transport_socket)
    )
    return _Refs(listener.name, (), sds)


class SidecarProxy(SotwProxy):
    """One simulated sidecar (SotW); see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secrets = TypeTrack()
        #: Secret names referred to by the current clusters and by the current listeners.
        self._sds_of: dict[str, frozenset[str]] = {CLUSTER: frozenset(), LISTENER: frozenset()}
        self._refs: dict[tuple[str, bytes], _Refs] = {}
        self._identity = b""
        #: (received, acked) of every distinct identity secret.
        self.identity_changes: list[tuple[float, float]] = []
        self.mesh_synced_at = 0.0

    def _decode(self, type_url: str, value: bytes) -> _Refs:
        key = (type_url, value)
        found = self._refs.get(key)
        if found is None:
            found = (_cluster_refs if type_url == CLUSTER else _listener_refs)(value)
            self._refs[key] = found
        return found

    def mesh_synced_now(self) -> bool:
        """Configured as a sidecar: clusters, endpoints, listeners and every secret held."""
        eds, sds = self.tracks[ENDPOINT], self.secrets
        return (
            bool(self.tracks[CLUSTER].have and self.tracks[LISTENER].have and self._identity)
            and eds.subscribed <= eds.have
            and sds.subscribed <= sds.have
        )

    async def stream(self, channel: Any) -> None:
        call = channel.stream_stream(SOTW_METHOD)()
        self.tracks[CLUSTER].requested = True
        await call.write(sotw_request(CLUSTER, node=node_bytes(self.node_id, self.group)))
        async for raw, received in self._responses(call):
            response = DiscoveryResponse.FromString(raw)
            type_url = response.type_url
            track = self.secrets if type_url == SECRET else self.tracks.get(type_url)
            if track is None:
                continue
            values = [packed.value for packed in response.resources]
            follow_up: list[bytes] = []
            identity = b""
            if type_url in (CLUSTER, LISTENER):
                refs = [self._decode(type_url, v) for v in values]
                names = [r.name for r in refs]
                track.have = set(names)
                if type_url == CLUSTER:
                    self._subscribe(ENDPOINT, {n for r in refs for n in r.eds}, follow_up)
                self._sds_of[type_url] = frozenset(n for r in refs for n in r.sds)
                self._subscribe(SECRET, set().union(*self._sds_of.values()), follow_up)
            elif type_url == SECRET:
                secrets = [secret_pb2.Secret.FromString(v) for v in values]
                names = [s.name for s in secrets]
                track.have = set(names)
                for secret, value in zip(secrets, values, strict=True):
                    if secret.name.startswith(IDENTITY_PREFIX):
                        identity = value
            else:
                names = [self.decoder.decode(type_url, v).name for v in values]
                track.have.update(names)
            track.received(response.version_info, response.nonce, len(raw), len(names))
            await call.write(self._request(type_url, track))
            for request in follow_up:
                await call.write(request)
            acked = now()
            track.acked(acked)
            short = "sds" if type_url == SECRET else SHORT[type_url]
            self.recorder.response(self.index, short, names, received, acked, len(raw))
            if identity and identity != self._identity:
                self._identity = identity
                self.identity_changes.append((received, acked))
            lds = self.tracks[LISTENER]
            if not lds.requested and self._lds_ready():
                lds.requested = True
                await call.write(sotw_request(LISTENER))
            self.after_ack(acked)
            if not self.mesh_synced_at and self.mesh_synced_now():
                self.mesh_synced_at = acked

    def _subscribe(self, type_url: str, names: set[str], follow_up: list[bytes]) -> None:
        """Ask for exactly ``names`` of an explicitly subscribed type, if they changed."""
        track = self.secrets if type_url == SECRET else self.tracks[type_url]
        wanted = frozenset(names)
        if wanted == track.subscribed and track.requested:
            return
        if not wanted and not track.requested:
            return
        track.subscribed = wanted
        track.names_field = names_block(3, wanted)
        track.have &= wanted
        track.requested = True
        follow_up.append(self._request(type_url, track))

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["types"]["sds"] = self.secrets.summary()
        out["mesh_synced"] = self.mesh_synced_at
        out["identity_changes"] = self.identity_changes
        out["listeners"] = len(self.tracks[LISTENER].have)
        out["clusters"] = len(self.tracks[CLUSTER].have)
        out["secrets"] = sorted(self.secrets.have)
        return out


class SidecarWorker(Worker):
    """A worker whose proxies are sidecars, each in its own group."""

    def __init__(self, conn: Any, spec: WorkerSpec, group_of: Callable[[int], str]) -> None:
        super().__init__(conn, spec)
        self.group_of = group_of

    async def _handle(self, command: str, argument: Any) -> Any:
        if command == "identity":
            sidecars = [p for p in self.proxies if isinstance(p, SidecarProxy)]
            return {
                "mesh_synced": sum(1 for p in sidecars if p.mesh_synced_at),
                "at_least": sum(1 for p in sidecars if len(p.identity_changes) >= argument),
                "failed": sum(1 for p in sidecars if p.error),
            }
        return await super()._handle(command, argument)

    async def _start(self, t0: float, ramp: float) -> int:
        spec = self.spec
        rng = random.Random(spec.seed * 1_000_003 + spec.first)
        loop = asyncio.get_running_loop()
        self.channels = [
            grpc.aio.insecure_channel(spec.target, options=_CHANNEL_OPTIONS)
            for _ in range(-(-spec.count // spec.streams_per_channel))
        ]
        for i in range(spec.count):
            index = spec.first + i
            proxy = SidecarProxy(
                index,
                f"{spec.node_prefix}-{index:05d}",
                self.group_of(index),
                spec.follow,
                self.recorder,
                self.decoder,
            )
            delay = t0 + rng.uniform(0.0, ramp) - loop.time()
            self.proxies.append(proxy)
            channel = self.channels[i // spec.streams_per_channel]
            self.tasks.append(asyncio.create_task(proxy.run(channel, delay)))
        return len(self.proxies)


def sidecar_worker_main(conn: Any, spec: WorkerSpec, group_of: Callable[[int], str]) -> None:
    """Entry point of a sidecar worker process (``multiprocessing`` spawn target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(SidecarWorker(conn, spec, group_of).serve())
    finally:
        conn.close()


class SidecarFleet(Fleet):
    """``with SidecarFleet(spec, group_of) as fleet:`` sidecars (SotW) in worker processes;
    ``group_of`` must be picklable (a module-level function)."""

    def __init__(self, spec: Any, group_of: Callable[[int], str]) -> None:
        super().__init__(spec)
        self.group_of = group_of

    def __enter__(self) -> SidecarFleet:
        self.start()
        return self

    def start(self, timeout: float = 60.0) -> None:
        spec = self.spec
        ctx = multiprocessing.get_context("spawn")
        workers = max(1, min(spec.workers, spec.proxies))
        base, extra = divmod(spec.proxies, workers)
        first = 0
        for w in range(workers):
            count = base + (1 if w < extra else 0)
            worker_spec = WorkerSpec(
                target=spec.target,
                mode="sotw",
                first=first,
                count=count,
                streams_per_channel=spec.streams_per_channel,
                follow=FOLLOW,
                node_prefix=spec.node_prefix,
                seed=spec.seed,
            )
            first += count
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=sidecar_worker_main,
                args=(child, worker_spec, self.group_of),
                name=f"sidecar-worker-{w}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for conn in self._conns:
            if not conn.poll(timeout):
                raise RuntimeError("a simulator worker did not start")
            conn.recv()
        self.t0 = time.monotonic() + 0.2
        self._ask("start", (self.t0, spec.ramp))

    def identity(self, changes: int) -> dict[str, int]:
        """Sidecars holding every secret they need, and those that have seen at least
        ``changes`` distinct identities (1: the first issue; 1 + r: r renewals)."""
        total: dict[str, int] = {}
        for reply in self._ask("identity", changes):
            for key, value in reply.items():
                total[key] = total.get(key, 0) + value
        return total

    def wait_identity(self, changes: int, timeout: float, poll: float = 0.1) -> dict[str, int]:
        """Wait until every sidecar is mesh-synced with ``changes`` identities seen."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.identity(changes)
            done = status["at_least"] >= self.spec.proxies and (
                status["mesh_synced"] >= self.spec.proxies
            )
            if done or time.monotonic() >= deadline:
                return status
            time.sleep(poll)
