"""State-of-the-world streams (``StreamAggregatedResources`` and ``Stream<Type>``).

Rules (Envoy's xDS protocol doc):
- a request whose nonce is not the last one sent for its type is stale and ignored, except
  the first request for a type on a stream (a reconnecting client may still carry the
  previous stream's nonce);
- a non-stale request with ``error_detail`` is a NACK: record it and do not re-send that
  version; without, it is an ACK;
- Listener and Cluster responses carry the complete set; other types carry only the
  resources that changed for the client (a partial update), so an endpoint change sends one
  ClusterLoadAssignment rather than all of them;
- clusters (and listeners) are removed last: when a push both removes some and changes other
  types, the client first gets the union of old and new, then everything else, then the
  final set (make before break).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from xds_server.cache import encoding
from xds_server.cache.snapshot import Resource, Snapshot, set_version
from xds_server.cache.snapshot_cache import CacheState
from xds_server.cache.status import StreamKind
from xds_server.cache.types import CLUSTER, ENDPOINT
from xds_server.server.stream import XdsStream
from xds_server.server.subscription import FULL_STATE_TYPES, TypeState

DiscoveryRequest = discovery_pb2.DiscoveryRequest


class SotwStream(XdsStream[Any]):
    def __init__(self, *args: Any, ads: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind = StreamKind.ADS_SOTW if ads else StreamKind.SOTW

    def names_in(self, request: Any) -> int:
        return len(request.resource_names)

    # -- requests ---------------------------------------------------------------------------

    def handle(
        self, type_url: str, request: Any, snapshot: Snapshot, cache_state: CacheState
    ) -> None:
        state = self.state_for(type_url)
        first = not state.started
        nonce = str(request.response_nonce)
        if not first and nonce != state.nonce:
            return  # stale: the client has not seen our latest response for this type yet
        if not first or nonce:
            self._acknowledge(state, request)
        state.started = True
        changed = state.subscription.apply_sotw(list(request.resource_names), first, type_url)
        if changed:
            covered = state.subscription
            for name in [n for n in state.client_has if not covered.covers(n)]:
                del state.client_has[name]
        force = first or state.answer_next_request
        state.answer_next_request = False
        if first or changed or force:
            self._respond(state, snapshot, cache_state, force=force)

    def _acknowledge(self, state: TypeState, request: Any) -> None:
        if not state.nonce or request.response_nonce != state.nonce:
            return
        if request.HasField("error_detail"):
            self.record_nack(
                state,
                state.status.sent_version,
                state.nonce,
                str(request.error_detail.message),
            )
        else:
            self.record_ack(state, str(request.version_info))

    # -- pushes -----------------------------------------------------------------------------

    def push(self, types: list[str], snapshot: Snapshot, cache_state: CacheState) -> None:
        final: list[TypeState] = []
        sent: set[str] = set()
        for type_url in types:
            state = self.states[type_url]
            if type_url in FULL_STATE_TYPES and self._removals(state, snapshot):
                others_change = any(
                    t != type_url and self._would_send(self.states[t], snapshot) for t in types
                )
                if others_change:
                    self._respond(state, snapshot, cache_state, keep_removed=True)
                    final.append(state)
                    sent.add(type_url)
                    continue
            if self._respond(state, snapshot, cache_state):
                sent.add(type_url)
        for state in final:
            self._respond(state, snapshot, cache_state)
        if CLUSTER in sent and ENDPOINT not in sent and ENDPOINT in self.states:
            self.states[ENDPOINT].answer_next_request = True

    def _removals(self, state: TypeState, snapshot: Snapshot) -> bool:
        present = snapshot.of_type(state.type_url)
        return any(name not in present for name in state.client_has)

    def _would_send(self, state: TypeState, snapshot: Snapshot) -> bool:
        if state.type_url in FULL_STATE_TYPES:
            return self._full_version(state, snapshot) != state.full_version
        return bool(self._changed(state, snapshot))

    def _selected(self, state: TypeState, snapshot: Snapshot) -> Mapping[str, Resource]:
        present = snapshot.of_type(state.type_url)
        if state.subscription.wildcard:
            return present
        return {name: present[name] for name in state.subscription.names if name in present}

    def _full_version(self, state: TypeState, snapshot: Snapshot) -> str:
        if state.subscription.wildcard:
            return snapshot.version(state.type_url)
        return set_version(self._selected(state, snapshot).values())

    def _changed(self, state: TypeState, snapshot: Snapshot) -> list[Resource]:
        has = state.client_has
        return [r for n, r in self._selected(state, snapshot).items() if has.get(n) != r.version]

    def _respond(
        self,
        state: TypeState,
        snapshot: Snapshot,
        cache_state: CacheState,
        *,
        force: bool = False,
        keep_removed: bool = False,
    ) -> bool:
        """Send what ``state`` needs from ``snapshot``; False when there is nothing to send."""
        type_url = state.type_url
        if type_url in FULL_STATE_TYPES:
            selected = dict(self._selected(state, snapshot))
            version = self._full_version(state, snapshot)
            if keep_removed:
                previous = self._previous_resources(state)
                for name, resource in previous.items():
                    selected.setdefault(name, resource)
                version = set_version(selected.values())
            elif version == state.full_version and not force:
                return False
            resources = [selected[n] for n in sorted(selected)]
            state.full_version = version
            state.client_has = {r.name: r.version for r in resources}
            state.sent_resources = {r.name: r for r in resources}
        else:
            resources = self._changed(state, snapshot)
            if force and not resources:
                resources = list(self._selected(state, snapshot).values())
            if not resources:
                return False
            resources.sort(key=lambda r: r.name)
            version = snapshot.version(type_url)
            for resource in resources:
                state.client_has[resource.name] = resource.version
        nonce = self.next_nonce()
        body = b"".join(r.sotw_field for r in resources)
        data = encoding.sotw_response(version, type_url, nonce, body)
        self.record_send(state, version, nonce, data, cache_state)
        return True

    def _previous_resources(self, state: TypeState) -> dict[str, Resource]:
        return dict(state.sent_resources)
