"""One simulated Envoy: an ADS stream (state-of-the-world or delta) or a REST poller.

Modelled on what Envoy does on an ADS stream: request CDS first; on clusters, ACK and
subscribe to their EDS names; once every subscribed ``ClusterLoadAssignment`` has arrived
(cluster warming done), request LDS; on listeners, ACK and subscribe to the route names of
their HTTP connection managers (``rds.route_config_name``); ACK everything with the
response's nonce (and, in SotW, its version and the current resource names). The node is
sent on the first request only (``set_node_on_first_message_only``, as envoy/bootstrap.yaml).
"""

from __future__ import annotations

import abc
import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench.simulator.recorder import Recorder
from bench.simulator.wire import (
    CLUSTER,
    DELTA_METHOD,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SHORT,
    SOTW_METHOD,
    DeltaDiscoveryResponse,
    DiscoveryResponse,
    ResourceDecoder,
    delta_request,
    names_block,
    node_bytes,
    sotw_request,
)

now = time.monotonic


@dataclass(slots=True)
class TypeTrack:
    """One type on one stream: what was asked, received and acknowledged."""

    version: str = ""
    nonce: str = ""
    requested: bool = False
    #: Explicit subscription (EDS, RDS); empty for the wildcard types.
    subscribed: frozenset[str] = frozenset()
    names_field: bytes = b""
    have: set[str] = field(default_factory=set)
    #: Delta, wildcard types: name -> the names it refers to (EDS / RDS names).
    refs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    first_ack: float = 0.0
    last_ack: float = 0.0
    responses: int = 0
    bytes: int = 0
    resources: int = 0

    def summary(self) -> tuple[float, float, int, int, int]:
        return (self.first_ack, self.last_ack, self.responses, self.bytes, self.resources)

    def received(self, version: str, nonce: str, size: int, count: int) -> None:
        """Count one response of ``size`` bytes carrying ``count`` resources."""
        self.version = version
        self.nonce = nonce
        self.responses += 1
        self.bytes += size
        self.resources += count

    def acked(self, at: float) -> None:
        if not self.first_ack:
            self.first_ack = at
        self.last_ack = at


class SimProxy(abc.ABC):
    """Base: identity, timings and the sync rule; subclasses speak one protocol."""

    def __init__(
        self,
        index: int,
        node_id: str,
        group: str,
        follow: frozenset[str],
        recorder: Recorder,
        decoder: ResourceDecoder,
    ) -> None:
        self.index = index
        self.decoder = decoder
        self.node_id = node_id
        self.group = group
        self.follow = follow
        self.recorder = recorder
        self.tracks: dict[str, TypeTrack] = {t: TypeTrack() for t in SHORT}
        self.started_at = 0.0
        self.first_response_at = 0.0
        self.synced_at = 0.0
        self.error = ""
        self.done = False

    def wants(self, type_url: str) -> bool:
        return SHORT[type_url] in self.follow

    def synced_now(self) -> bool:
        t = self.tracks
        if self.wants(CLUSTER) and not t[CLUSTER].first_ack:
            return False
        if self.wants(ENDPOINT) and not (t[ENDPOINT].requested or not t[ENDPOINT].subscribed):
            return False
        if self.wants(ENDPOINT) and not t[ENDPOINT].subscribed <= t[ENDPOINT].have:
            return False
        if self.wants(LISTENER) and not t[LISTENER].first_ack:
            return False
        return not (self.wants(ROUTE) and not t[ROUTE].subscribed <= t[ROUTE].have)

    def after_ack(self, acked: float) -> None:
        if not self.synced_at and self.synced_now():
            self.synced_at = acked

    def summary(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "node": self.node_id,
            "started": self.started_at,
            "first_response": self.first_response_at,
            "synced": self.synced_at,
            "error": self.error,
            "types": {SHORT[t]: track.summary() for t, track in self.tracks.items()},
        }

    async def run(self, channel: Any, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        self.started_at = now()
        try:
            await self.stream(channel)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as error:
            self.error = f"{error.code().name}: {error.details()}"
        except Exception as error:  # a simulator bug must not take the worker down
            self.error = f"{type(error).__name__}: {error}"
        finally:
            self.done = True

    @abc.abstractmethod
    async def stream(self, channel: Any) -> None:
        """Speak the protocol on ``channel`` until the stream ends."""

    async def _responses(self, call: Any) -> AsyncIterator[tuple[bytes, float]]:
        """Every raw response of ``call`` with the time it arrived, until the server ends it."""
        while True:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                self.error = self.error or "stream ended by the server"
                return
            received = now()
            if not self.first_response_at:
                self.first_response_at = received
            yield raw, received

    def _acked(
        self, track: TypeTrack, type_url: str, names: list[str], received: float, size: int
    ) -> float:
        """Record that a response was ACKed now; returns the ACK time."""
        acked = now()
        track.acked(acked)
        self.recorder.response(self.index, SHORT[type_url], names, received, acked, size)
        return acked


class SotwProxy(SimProxy):
    async def stream(self, channel: Any) -> None:
        call = channel.stream_stream(SOTW_METHOD)()
        node = node_bytes(self.node_id, self.group)
        first = CLUSTER if self.wants(CLUSTER) else LISTENER
        self.tracks[first].requested = True
        await call.write(sotw_request(first, node=node))
        decoder = self.decoder
        async for raw, received in self._responses(call):
            response = DiscoveryResponse.FromString(raw)
            type_url = response.type_url
            track = self.tracks.get(type_url)
            if track is None:
                continue
            decoded = decoder.sotw(response)
            names = [d.name for d in decoded]
            track.received(response.version_info, response.nonce, len(raw), len(names))
            follow_up: list[bytes] = []
            if type_url in (CLUSTER, LISTENER):
                track.have = set(names)
                refs = frozenset(r for d in decoded for r in d.refs)
                child_type = ENDPOINT if type_url == CLUSTER else ROUTE
                if self.wants(child_type):
                    child = self.tracks[child_type]
                    if refs != child.subscribed:
                        child.subscribed = refs
                        child.names_field = names_block(3, refs)
                        child.have &= refs
                        if child.requested or type_url == CLUSTER or self._lds_ready():
                            child.requested = True
                            follow_up.append(self._request(child_type, child))
            else:
                track.have.update(names)
            await call.write(self._request(type_url, track))
            for request in follow_up:
                await call.write(request)
            acked = self._acked(track, type_url, names, received, len(raw))
            if self.wants(LISTENER) and not self.tracks[LISTENER].requested and self._lds_ready():
                self.tracks[LISTENER].requested = True
                await call.write(sotw_request(LISTENER))
            self.after_ack(acked)

    def _lds_ready(self) -> bool:
        """Clusters warmed: every subscribed EDS name has arrived (Envoy then asks LDS)."""
        eds = self.tracks[ENDPOINT]
        if not self.wants(CLUSTER):
            return True
        if not self.tracks[CLUSTER].first_ack and not self.tracks[CLUSTER].responses:
            return False
        return not self.wants(ENDPOINT) or eds.subscribed <= eds.have

    @staticmethod
    def _request(type_url: str, track: TypeTrack) -> bytes:
        return sotw_request(
            type_url, version=track.version, nonce=track.nonce, names=track.names_field
        )


class DeltaProxy(SimProxy):
    async def stream(self, channel: Any) -> None:
        call = channel.stream_stream(DELTA_METHOD)()
        node = node_bytes(self.node_id, self.group)
        first = CLUSTER if self.wants(CLUSTER) else LISTENER
        self.tracks[first].requested = True
        await call.write(delta_request(first, node=node))
        decoder = self.decoder
        async for raw, received in self._responses(call):
            response = DeltaDiscoveryResponse.FromString(raw)
            type_url = response.type_url
            track = self.tracks.get(type_url)
            if track is None:
                continue
            plain = decoder.delta_names(response)
            decoded = decoder.delta(response) if plain is None else []
            names = plain if plain is not None else [d.name for d in decoded]
            removed = list(response.removed_resources)
            track.received(response.system_version_info, response.nonce, len(raw), len(names))
            track.have.update(names)
            track.have.difference_update(removed)
            follow_up: list[bytes] = []
            if type_url in (CLUSTER, LISTENER):
                for d in decoded:
                    track.refs[d.name] = d.refs
                for name in removed:
                    track.refs.pop(name, None)
                refs = frozenset(r for rs in track.refs.values() for r in rs)
                child_type = ENDPOINT if type_url == CLUSTER else ROUTE
                if self.wants(child_type):
                    child = self.tracks[child_type]
                    if refs != child.subscribed:
                        added, dropped = refs - child.subscribed, child.subscribed - refs
                        child.subscribed = refs
                        child.have &= refs
                        if child.requested or type_url == CLUSTER or self._lds_ready():
                            if not child.requested:
                                added, dropped = refs, frozenset()
                            child.requested = True
                            follow_up.append(
                                delta_request(child_type, subscribe=added, unsubscribe=dropped)
                            )
            await call.write(delta_request(type_url, nonce=response.nonce))
            for request in follow_up:
                await call.write(request)
            acked = self._acked(track, type_url, names, received, len(raw))
            if self.wants(LISTENER) and not self.tracks[LISTENER].requested and self._lds_ready():
                self.tracks[LISTENER].requested = True
                await call.write(delta_request(LISTENER))
            self.after_ack(acked)

    def _lds_ready(self) -> bool:
        eds = self.tracks[ENDPOINT]
        if not self.wants(CLUSTER):
            return True
        if not self.tracks[CLUSTER].responses:
            return False
        return not self.wants(ENDPOINT) or eds.subscribed <= eds.have


class RestPoller(SimProxy):
    """Envoy's REST-JSON xDS (``api_type: REST``): POST ``/v3/discovery:clusters`` every
    ``interval`` seconds with the last version; 304 means unchanged."""

    def configure(self, session: Any, base_url: str, interval: float) -> None:
        self.session = session
        self.base_url = base_url
        self.interval = interval

    async def stream(self, channel: Any) -> None:
        url = f"{self.base_url}/v3/discovery:clusters"
        body = {
            "node": {
                "id": self.node_id,
                "cluster": self.group,
                "user_agent_name": "envoy",
                "user_agent_build_version": {"version": {"major_number": 1, "minor_number": 40}},
            },
            "version_info": "",
            "resource_names": [],
            "type_url": CLUSTER,
        }
        track = self.tracks[CLUSTER]
        track.requested = True
        while True:
            body["version_info"] = track.version
            async with self.session.post(url, json=body) as reply:
                raw = await reply.read()
                received = now()
                if reply.status == 200:
                    data = json.loads(raw)
                    if not self.first_response_at:
                        self.first_response_at = received
                    resources = data.get("resources", [])
                    track.have = {str(r.get("name", "")) for r in resources}
                    # REST has no nonce: the version alone identifies what was received.
                    track.received(str(data.get("version_info", "")), "", len(raw), len(resources))
                    track.acked(received)
                    self.after_ack(received)
                elif reply.status != 304:
                    self.error = f"HTTP {reply.status}: {raw[:200]!r}"
                    return
            await asyncio.sleep(self.interval)
