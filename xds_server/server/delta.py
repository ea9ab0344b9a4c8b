"""Incremental (delta) streams (``DeltaAggregatedResources`` and ``Delta<Type>``).

Rules (Envoy's xDS protocol doc, "Incremental xDS"):
- every resource has its own version; the client says what it holds on reconnect
  (``initial_resource_versions``) and receives only what differs (nothing at all, not even
  an empty response, when it holds every resource current);
- subscription changes are applied on every request, whatever its nonce;
- a request whose nonce is the last one sent acknowledges it, or rejects it with
  ``error_detail`` (a NACKed version is never re-sent; the next change is);
- deletions travel in ``removed_resources``; a name subscribed explicitly that does not
  exist is reported removed once; unsubscribing a name still covered by a wildcard
  subscription changes nothing;
- within one push, additions and updates go out in CDS → EDS → LDS → RDS → SDS order and
  removals after them, listeners first and secrets last (make before break).

Cost: a stream in sync with the snapshot a new one was built from looks only at what changed
between the two (``Snapshot.changes``); a first answer that sends a whole selection uses the
body and name -> version map shared by every stream of the snapshot (``shared``).
"""

from __future__ import annotations

from typing import Any

from xds_server.cache import encoding
from xds_server.cache.snapshot import Resource, Snapshot, TypeChanges
from xds_server.cache.snapshot_cache import CacheState
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from xds_server.server import shared
from xds_server.server.shared import Selection
from xds_server.server.stream import XdsStream
from xds_server.server.subscription import ABSENT, TypeState
from xds_server.status import StreamKind

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
        self, state: TypeState, request: Any, snapshot: Snapshot, cache_state: CacheState
    ) -> None:
        type_url = state.type_url
        first = not state.started
        nonce = str(request.response_nonce)
        if nonce and nonce == state.nonce:
            self.record_reply(state, request, state.status.sent_version)
        if first:
            state.started = True
            state.set_client_has(dict(request.initial_resource_versions))
        forgotten = state.subscription.apply_delta(
            list(request.resource_names_subscribe),
            list(request.resource_names_unsubscribe),
            first,
            type_url,
        )
        if forgotten & state.client_has.keys():
            has = state.owned_client_has()
            for name in forgotten:
                has.pop(name, None)
        changes = bool(request.resource_names_subscribe) or first
        if changes:
            updates, removed, selection = self._diff_all(state, snapshot)
            if updates or removed:
                self._send(state, snapshot, cache_state, updates, removed, selection)
            elif first and request.initial_resource_versions:
                # A reconnect holding everything current: nothing to send, not even an
                # empty response (Envoy would count it as an update).
                self.record_held(state, snapshot.version(type_url))
            elif first:
                # A first subscription to nothing: the empty answer ends Envoy's wait.
                self._send(state, snapshot, cache_state, updates, removed, selection)
            state.synced_serial = snapshot.serial

    # -- pushes -----------------------------------------------------------------------------

    def push(self, types: list[str], snapshot: Snapshot, cache_state: CacheState) -> None:
        pending_removals: dict[str, list[str]] = {}
        for type_url in types:
            state = self.states[type_url]
            if state.synced_serial == snapshot.serial:
                continue  # already in sync with this very snapshot
            changes = snapshot.changes_since(state.synced_serial)
            if changes is not None:
                change = changes.get(type_url)
                updates, removed = (
                    self._diff_changed(state, snapshot, change) if change else ([], [])
                )
            else:
                updates, removed = self._diff(state, snapshot)
            state.synced_serial = snapshot.serial
            if removed:
                pending_removals[type_url] = removed
            if updates:
                self._send(state, snapshot, cache_state, updates, [])
        for type_url in REMOVAL_ORDER:
            removed = pending_removals.get(type_url, [])
            if removed:
                self._send(self.states[type_url], snapshot, cache_state, [], removed)

    def _diff_all(
        self, state: TypeState, snapshot: Snapshot
    ) -> tuple[list[Resource], list[str], Selection | None]:
        """``_diff``, with the shared selection when the client holds nothing yet (a first
        subscription sends every subscribed resource: one body for every stream)."""
        if not state.client_has:
            subscription = state.subscription
            if subscription.wildcard and not subscription.names:
                selection = shared.full_state(snapshot, state.type_url)
                return list(selection.resources), [], selection
            if not subscription.wildcard:
                present = snapshot.of_type(state.type_url)
                selection = shared.selection(snapshot, state.type_url, subscription.names)
                removed = sorted(n for n in subscription.names if n not in present)
                return list(selection.resources), removed, selection
        updates, removed = self._diff(state, snapshot)
        return updates, removed, None

    def _diff_changed(
        self, state: TypeState, snapshot: Snapshot, change: TypeChanges
    ) -> tuple[list[Resource], list[str]]:
        """``_diff`` for a client in sync with an ancestor of ``snapshot``: only the names that
        changed since (``change``) can differ."""
        present = snapshot.of_type(state.type_url)
        subscription = state.subscription
        names = subscription.names
        has = state.client_has
        if subscription.wildcard or len(change.updated) <= len(names):
            candidates = [n for n in change.updated if subscription.covers(n)]
        else:
            candidates = [n for n in names if n in change.updated]
        updates = [present[n] for n in candidates if has.get(n) != present[n].version]
        removed: list[str] = []
        for name in change.removed:
            held = has.get(name)
            if name in names:
                if held != ABSENT:
                    removed.append(name)
            elif held is not None and held != ABSENT:
                removed.append(name)  # held through the wildcard, now gone
        updates.sort(key=lambda r: r.name)
        removed.sort()
        return updates, removed

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
        selection: Selection | None = None,
    ) -> None:
        if selection is not None and not state.client_has and not removed:
            # Shared until the first change to it (``owned_client_has`` copies then).
            state.set_client_has(selection.versions)
        else:
            state.hold(updates, removed)
        version = snapshot.version(state.type_url)
        nonce = self.next_nonce()
        body = (
            selection.delta_body
            if selection is not None
            else b"".join(r.delta_field for r in updates)
        )
        data = encoding.delta_response(version, state.type_url, nonce, body, removed)
        self.record_send(state, version, nonce, data, cache_state)
