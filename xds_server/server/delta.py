"""Incremental (delta) streams (``DeltaAggregatedResources`` and ``Delta<Type>``).

Rules (Envoy's xDS protocol doc, "Incremental xDS"):
- every resource has its own version; the client says what it holds on reconnect
  (``initial_resource_versions``) and receives only what differs;
- subscription changes are applied on every request, whatever its nonce;
- a request whose nonce is the last one sent acknowledges it, or rejects it with
  ``error_detail`` (a NACKed version is never re-sent; the next change is);
- deletions travel in ``removed_resources``; a name subscribed explicitly that does not
  exist is reported removed once; unsubscribing a name still covered by a wildcard
  subscription changes nothing;
- within one push, additions and updates go out in CDS → EDS → LDS → RDS → SDS order and
  removals after them, listeners first and secrets last (make before break).
"""

from __future__ import annotations

from typing import Any

from xds_server.cache import encoding
from xds_server.cache.snapshot import Resource, Snapshot
from xds_server.cache.snapshot_cache import CacheState
from xds_server.cache.status import StreamKind
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from xds_server.server.stream import XdsStream
from xds_server.server.subscription import ABSENT, TypeState

#: Removals go from what depends to what is depended on.
REMOVAL_ORDER = (LISTENER, ROUTE, CLUSTER, ENDPOINT, SECRET)


class DeltaStream(XdsStream[Any]):
    def __init__(self, *args: Any, ads: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind = StreamKind.ADS_DELTA if ads else StreamKind.DELTA

    def names_in(self, request: Any) -> int:
        return (
            len(request.resource_names_subscribe)
            + len(request.resource_names_unsubscribe)
            + len(request.initial_resource_versions)
        )

    # -- requests ---------------------------------------------------------------------------

    def handle(
        self, type_url: str, request: Any, snapshot: Snapshot, cache_state: CacheState
    ) -> None:
        state = self.state_for(type_url)
        first = not state.started
        nonce = str(request.response_nonce)
        if nonce and nonce == state.nonce:
            if request.HasField("error_detail"):
                self.record_nack(
                    state, state.status.sent_version, nonce, str(request.error_detail.message)
                )
            else:
                self.record_ack(state, state.status.sent_version)
        if first:
            state.started = True
            state.client_has = dict(request.initial_resource_versions)
        forgotten = state.subscription.apply_delta(
            list(request.resource_names_subscribe),
            list(request.resource_names_unsubscribe),
            first,
            type_url,
        )
        for name in forgotten:
            state.client_has.pop(name, None)
        changes = bool(request.resource_names_subscribe) or first
        if changes:
            updates, removed = self._diff(state, snapshot)
            if updates or removed or first:
                self._send(state, snapshot, cache_state, updates, removed)

    # -- pushes -----------------------------------------------------------------------------

    def push(self, types: list[str], snapshot: Snapshot, cache_state: CacheState) -> None:
        pending_removals: dict[str, list[str]] = {}
        for type_url in types:
            state = self.states[type_url]
            updates, removed = self._diff(state, snapshot)
            if removed:
                pending_removals[type_url] = removed
            if updates:
                self._send(state, snapshot, cache_state, updates, [])
        for type_url in REMOVAL_ORDER:
            removed = pending_removals.get(type_url, [])
            if removed:
                self._send(self.states[type_url], snapshot, cache_state, [], removed)

    def _diff(self, state: TypeState, snapshot: Snapshot) -> tuple[list[Resource], list[str]]:
        """(resources to send, names to report removed) for this client."""
        present = snapshot.of_type(state.type_url)
        subscription = state.subscription
        has = state.client_has
        updates: list[Resource] = []
        removed: list[str] = []
        if subscription.wildcard:
            updates.extend(r for n, r in present.items() if has.get(n) != r.version)
        for name in subscription.names:
            resource = present.get(name)
            if resource is None:
                if has.get(name) != ABSENT:
                    removed.append(name)
            elif not subscription.wildcard and has.get(name) != resource.version:
                updates.append(resource)
        for name, version in has.items():
            if version != ABSENT and name not in present and name not in subscription.names:
                removed.append(name)  # held through the wildcard, now gone
        updates.sort(key=lambda r: r.name)
        removed.sort()
        return updates, removed

    def _send(
        self,
        state: TypeState,
        snapshot: Snapshot,
        cache_state: CacheState,
        updates: list[Resource],
        removed: list[str],
    ) -> None:
        for resource in updates:
            state.client_has[resource.name] = resource.version
        for name in removed:
            if name in state.subscription.names:
                state.client_has[name] = ABSENT
            else:
                state.client_has.pop(name, None)
        version = snapshot.version(state.type_url)
        nonce = self.next_nonce()
        body = b"".join(r.delta_field for r in updates)
        data = encoding.delta_response(version, state.type_url, nonce, body, removed)
        self.record_send(state, version, nonce, data, cache_state)
