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

from collections.abc import Collection, Mapping
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from xds_server.cache import encoding
from xds_server.cache.snapshot import Resource, Snapshot, TypeChanges
from xds_server.cache.snapshot_cache import CacheState
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from xds_server.server import shared
from xds_server.server.shared import Selection
from xds_server.server.stream import XdsStream
from xds_server.server.subscription import ABSENT, TypeState, names_for_key, remember_names
from xds_server.status import StreamKind

#: Removals go from what depends to what is depended on.
REMOVAL_ORDER = (LISTENER, ROUTE, CLUSTER, ENDPOINT, SECRET)

#: Fields cleared to get the part of a request that names what it subscribes to.
_NOT_SUBSCRIBE = ("node", "type_url", "initial_resource_versions", "response_nonce", "error_detail")
#: Below this many names, decoding them costs less than recognising their bytes.
_KEYED_FROM = 32


def subscribed_names(request: Any) -> Collection[str]:
    """The names a delta request subscribes to.

    Envoy subscribes to every cluster's endpoints in one request (a thousand names), and a
    fleet subscribes alike: a list seen before is recognised from its bytes (the request
    serialised without node, type, initial versions and nonce, in C) and costs no decoding.
    Field 3 names them in a SotW request too, so both protocols share one set per list.
    Clears those fields of ``request`` (read them first), or of a copy if it carries the
    node, which the proxy's status keeps.
    """
    subscribe = request.resource_names_subscribe
    if len(subscribe) < _KEYED_FROM or request.resource_names_unsubscribe:
        return list(subscribe)
    probe = request
    if request.HasField("node"):
        probe = discovery_pb2.DeltaDiscoveryRequest()
        probe.CopyFrom(request)
    for name in _NOT_SUBSCRIBE:
        probe.ClearField(name)
    key: bytes = probe.SerializeToString()
    known = names_for_key(key)
    return known if known is not None else remember_names(key, subscribe)


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
            self.record_reply(state, request, state.sent_version)
        reconnect = first and bool(request.initial_resource_versions)
        if first:
            state.started = True
            state.set_client_has(dict(request.initial_resource_versions))
        subscribe = subscribed_names(request)  # last use of request but for the unsubscribe
        forgotten = state.subscription.apply_delta(
            list(subscribe), list(request.resource_names_unsubscribe), first, type_url
        )
        if forgotten & state.client_has.keys():
            has = state.owned_client_has()
            for name in forgotten:
                has.pop(name, None)
        changes = bool(subscribe) or first
        if changes:
            updates, removed, selection = self._diff_all(state, snapshot)
            if updates or removed:
                self._send(state, snapshot, cache_state, updates, removed, selection)
            elif reconnect:
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
            body: bytes | None = None
            holds: Mapping[str, str] | None = None
            if changes is not None:
                change = changes.get(type_url)
                if change:
                    updates, removed, body, holds = self._changed(state, snapshot, change)
                else:
                    updates, removed = [], []
            else:
                updates, removed = self._diff(state, snapshot)
            state.synced_serial = snapshot.serial
            if removed:
                pending_removals[type_url] = removed
            if updates:
                self._send(state, snapshot, cache_state, updates, [], body=body, holds=holds)
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
                selection = shared.selection(snapshot, state.type_url, subscription.names)
                return list(selection.resources), list(selection.absent), selection
        updates, removed = self._diff(state, snapshot)
        return updates, removed, None

    def _changed(
        self, state: TypeState, snapshot: Snapshot, change: TypeChanges
    ) -> tuple[list[Resource], list[str], bytes | None, Mapping[str, str] | None]:
        """``_diff_changed``, plus the response body and what the client then holds when
        they can be shared: a client holding a snapshot's shared name -> version map (every
        stream of a fleet after its first answers) holds the new snapshot's shared map after
        this push, unless something was removed; and every stream holding the same map,
        subscribed alike, is sent the same resources: chosen and joined once per snapshot,
        not copied (a thousand names) and joined (every changed resource) per stream."""
        has = state.client_has
        if type(has) is not dict:
            subscription = state.subscription
            names = None if subscription.wildcard else subscription.names
            held = shared.held_versions(snapshot, state.type_url, names)
            if held is not None:
                updates, removed, body = shared.computed_once(
                    snapshot,
                    "delta " + state.type_url,
                    (subscription.wildcard, subscription.names, has, change),
                    lambda: self._joined(*self._diff_changed(state, snapshot, change)),
                )
                return list(updates), list(removed), body, None if removed else held
        own_updates, own_removed = self._diff_changed(state, snapshot, change)
        return own_updates, own_removed, None, None

    @staticmethod
    def _joined(
        updates: list[Resource], removed: list[str]
    ) -> tuple[tuple[Resource, ...], tuple[str, ...], bytes]:
        return tuple(updates), tuple(removed), b"".join(r.delta_field for r in updates)

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
        *,
        body: bytes | None = None,
        holds: Mapping[str, str] | None = None,
    ) -> None:
        """Send ``updates`` and ``removed``. ``selection``: a first answer of a shared
        selection; ``body``: ``updates`` joined already; ``holds``: the shared map of what
        the client holds once it has them (else this stream's own copy records it)."""
        if selection is not None and not state.client_has and not removed:
            # Shared until the first change to it (``owned_client_has`` copies then).
            state.set_client_has(selection.versions)
        elif holds is not None:
            state.set_client_has(holds)
        else:
            state.hold(updates, removed)
        version = snapshot.version(state.type_url)
        nonce = self.next_nonce()
        if selection is not None:
            body = selection.delta_body
        elif body is None:
            body = b"".join(r.delta_field for r in updates)
        data = encoding.delta_response(version, state.type_url, nonce, body, removed)
        self.record_send(state, version, nonce, data, cache_state)
