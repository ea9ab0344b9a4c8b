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

Cost: a thousand streams share one snapshot, so what can be shared is — a whole state of the
world (its body and its name -> version map) is built once per snapshot (``shared``), a
repeated list of names in ACKs is recognised from its bytes, and a stream in sync with the
snapshot a new one was built from looks only at what changed between the two
(``Snapshot.changes``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from xds_server.cache import encoding
from xds_server.cache.snapshot import Changes, Resource, Snapshot, set_version
from xds_server.cache.snapshot_cache import CacheState
from xds_server.cache.types import CLUSTER, ENDPOINT
from xds_server.server import shared
from xds_server.server.stream import XdsStream
from xds_server.server.subscription import (
    FULL_STATE_TYPES,
    TypeState,
    names_for_key,
    remember_names,
)
from xds_server.status import StreamKind

DiscoveryRequest = discovery_pb2.DiscoveryRequest

#: Fields cleared to get the part of a request that names resources (see ``names_key``).
_NOT_NAMES = ("version_info", "node", "type_url", "response_nonce", "error_detail")


def names_key(request: Any) -> bytes:
    """The request serialised without version, node, type and nonce: equal keys mean equal
    resource names (in the same order). Computed in C, without a Python string per name.

    Clears those fields of ``request`` itself (it is not read afterwards), unless it
    carries the node, which the proxy's status keeps: then a copy is cleared instead.
    """
    probe = request
    if request.HasField("node"):
        probe = DiscoveryRequest()
        probe.CopyFrom(request)
    for name in _NOT_NAMES:
        probe.ClearField(name)
    key: bytes = probe.SerializeToString()
    return key


class SotwStream(XdsStream[Any]):
    def __init__(self, *args: Any, ads: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind = StreamKind.ADS_SOTW if ads else StreamKind.SOTW

    def names_in(self, request: Any) -> int:
        return len(request.resource_names)

    # -- requests ---------------------------------------------------------------------------

    def handle(
        self, state: TypeState, request: Any, snapshot: Snapshot, cache_state: CacheState
    ) -> None:
        first = not state.started
        nonce = str(request.response_nonce)
        if not first and nonce != state.nonce:
            return  # stale: the client has not seen our latest response for this type yet
        if nonce and nonce == state.nonce:
            self.record_reply(state, request, str(request.version_info))
        state.started = True
        changed = self._subscribe(state, request, first)  # last use of request
        if changed:
            covered = state.subscription
            if any(not covered.covers(n) for n in state.client_has):
                state.set_client_has(
                    {n: v for n, v in state.client_has.items() if covered.covers(n)}
                )
        force = first or state.answer_next_request
        state.answer_next_request = False
        if first or changed or force:
            self._respond(state, snapshot, cache_state, force=force)
            # Every subscribed resource of ``snapshot`` is now held at its version.
            state.synced_serial = snapshot.serial

    @staticmethod
    def _subscribe(state: TypeState, request: Any, first: bool) -> bool:
        """Apply the request's resource names; True if the subscription changed.

        Envoy repeats the whole list in every request (thousands of names in each EDS ACK):
        a list seen before is recognised from its bytes and costs no decoding.
        """
        subscription = state.subscription
        if not request.resource_names:
            requested: frozenset[str] = frozenset()
        else:
            key = names_key(request)
            known = names_for_key(key)
            if not first and known is not None and known is subscription.requested:
                return False  # the same names as the last request: nothing changes
            requested = known if known is not None else remember_names(key, request.resource_names)
        changed = subscription.apply_sotw(requested, first, state.type_url)
        subscription.requested = requested
        return changed

    # -- pushes -----------------------------------------------------------------------------

    def push(self, types: list[str], snapshot: Snapshot, cache_state: CacheState) -> None:
        states = [self.states[t] for t in types]
        if all(s.synced_serial == snapshot.serial for s in states):
            return  # already in sync with this very snapshot
        synced = states[0].synced_serial if states else None
        changes = (
            snapshot.changes_since(synced)
            if all(s.synced_serial == synced for s in states)
            else None
        )
        if changes is not None and not any(
            changes[t].removed for t in types if t in FULL_STATE_TYPES and t in changes
        ):
            self._push_changes(states, snapshot, cache_state, changes)
        else:
            self._push_all(types, snapshot, cache_state)
        for state in states:
            state.synced_serial = snapshot.serial

    def _push_changes(
        self,
        states: list[TypeState],
        snapshot: Snapshot,
        cache_state: CacheState,
        changes: Changes,
    ) -> None:
        """The stream is in sync with an ancestor of ``snapshot`` (``changes`` is what changed
        since), and no full state type lost resources: only that can need sending."""
        sent: set[str] = set()
        for state in states:
            change = changes.get(state.type_url)
            if change is None:
                continue
            if state.type_url in FULL_STATE_TYPES:
                sent_now = self._respond(state, snapshot, cache_state)
            else:
                sent_now = self._respond_changed(state, snapshot, cache_state, change.updated)
            if sent_now:
                sent.add(state.type_url)
        self._answer_endpoints_after_clusters(sent)

    def _push_all(self, types: list[str], snapshot: Snapshot, cache_state: CacheState) -> None:
        final: list[TypeState] = []
        sent: set[str] = set()
        for type_url in types:
            state = self.states[type_url]
            if type_url in FULL_STATE_TYPES and self._removals(state, snapshot):
                others_change = any(
                    t != type_url and self._would_send(self.states[t], snapshot) for t in types
                )
                if others_change:
                    self._respond_with_removed(state, snapshot, cache_state)
                    final.append(state)
                    sent.add(type_url)
                    continue
            if self._respond(state, snapshot, cache_state):
                sent.add(type_url)
        for state in final:
            self._respond(state, snapshot, cache_state)
        self._answer_endpoints_after_clusters(sent)

    def _answer_endpoints_after_clusters(self, sent: set[str]) -> None:
        """After a CDS update, answer the next EDS request even if no endpoint changed."""
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

    # -- responses --------------------------------------------------------------------------

    def _respond(
        self, state: TypeState, snapshot: Snapshot, cache_state: CacheState, *, force: bool = False
    ) -> bool:
        """Send what ``state`` needs from ``snapshot``; False when there is nothing to send.
        ``force``: answer even when the client holds it all already."""
        if state.type_url in FULL_STATE_TYPES:
            if state.subscription.wildcard:
                return self._respond_whole_type(state, snapshot, cache_state, force)
            return self._respond_named(state, snapshot, cache_state, force)
        if not state.client_has:
            return self._respond_first(state, snapshot, cache_state)
        return self._respond_partial(state, snapshot, cache_state, force)

    def _respond_whole_type(
        self, state: TypeState, snapshot: Snapshot, cache_state: CacheState, force: bool
    ) -> bool:
        """A wildcard full state type: one shared body and name -> version map per snapshot."""
        version = snapshot.version(state.type_url)
        if version == state.full_version and not force:
            return False
        full = shared.full_state(snapshot, state.type_url)
        self._hold_full(state, version, full.versions, full.by_name)
        self._send(state, version, full.resources, full.sotw_body, cache_state)
        return True

    def _respond_named(
        self, state: TypeState, snapshot: Snapshot, cache_state: CacheState, force: bool
    ) -> bool:
        """A full state type subscribed by name: the named resources that exist."""
        selected = self._selected(state, snapshot)
        version = set_version(selected.values())
        if version == state.full_version and not force:
            return False
        self._send_full(state, version, [selected[n] for n in sorted(selected)], cache_state)
        return True

    def _respond_with_removed(
        self, state: TypeState, snapshot: Snapshot, cache_state: CacheState
    ) -> None:
        """Make before break: the new full state plus the resources it no longer has, sent
        before the other types change; the final set follows them."""
        selected = dict(self._selected(state, snapshot))
        for name, resource in state.sent_resources.items():
            selected.setdefault(name, resource)
        version = set_version(selected.values())
        self._send_full(state, version, [selected[n] for n in sorted(selected)], cache_state)

    def _send_full(
        self, state: TypeState, version: str, resources: list[Resource], cache_state: CacheState
    ) -> None:
        self._hold_full(
            state, version, {r.name: r.version for r in resources}, {r.name: r for r in resources}
        )
        self._send(state, version, resources, None, cache_state)

    @staticmethod
    def _hold_full(
        state: TypeState,
        version: str,
        versions: Mapping[str, str],
        by_name: Mapping[str, Resource],
    ) -> None:
        """The client now holds this complete set of a full state type."""
        state.full_version = version
        state.set_client_has(versions)
        state.sent_resources = by_name

    def _respond_first(self, state: TypeState, snapshot: Snapshot, cache_state: CacheState) -> bool:
        """A partial-update type the client holds nothing of yet: everything selected, one
        body and name -> version map shared per snapshot."""
        subscription = state.subscription
        if subscription.wildcard:
            selection = shared.full_state(snapshot, state.type_url)
        else:
            selection = shared.selection(snapshot, state.type_url, subscription.names)
        if not selection.resources:
            return False
        # Shared until the first change to it (``owned_client_has`` copies then).
        state.set_client_has(selection.versions)
        version = snapshot.version(state.type_url)
        self._send(state, version, selection.resources, selection.sotw_body, cache_state)
        return True

    def _respond_partial(
        self, state: TypeState, snapshot: Snapshot, cache_state: CacheState, force: bool
    ) -> bool:
        """A partial-update type: the selected resources the client does not hold (all of
        them when ``force`` and none differ)."""
        resources = self._changed(state, snapshot)
        if force and not resources:
            resources = list(self._selected(state, snapshot).values())
        if not resources:
            return False
        resources.sort(key=lambda r: r.name)
        state.hold(resources)
        self._send(state, snapshot.version(state.type_url), resources, None, cache_state)
        return True

    def _respond_changed(
        self,
        state: TypeState,
        snapshot: Snapshot,
        cache_state: CacheState,
        updated: frozenset[str],
    ) -> bool:
        """``_respond`` for a partial-update type when only ``updated`` can differ."""
        subscription = state.subscription
        has = state.client_has
        if type(has) is not dict:
            # The client holds a shared map (the snapshot it was in sync with): after this
            # push it holds the shared map of this snapshot, and every stream holding the
            # same map, subscribed alike, is sent the same resources: chosen and joined once.
            names = None if subscription.wildcard else subscription.names
            held = shared.held_versions(snapshot, state.type_url, names)
            if held is not None:
                resources, body = shared.computed_once(
                    snapshot,
                    state.type_url,
                    (names, has, updated),
                    lambda: self._joined(self._changed_since(state, snapshot, updated)),
                )
                if not resources:
                    return False
                state.set_client_has(held)
                self._send(state, snapshot.version(state.type_url), resources, body, cache_state)
                return True
        changed = self._changed_since(state, snapshot, updated)
        if not changed:
            return False
        state.hold(changed)
        self._send(state, snapshot.version(state.type_url), changed, None, cache_state)
        return True

    @staticmethod
    def _changed_since(
        state: TypeState, snapshot: Snapshot, updated: frozenset[str]
    ) -> list[Resource]:
        """The subscribed resources among ``updated`` the client does not hold, by name."""
        subscription = state.subscription
        present = snapshot.of_type(state.type_url)
        has = state.client_has
        if subscription.wildcard:
            candidates: Collection[str] = updated
        elif len(updated) <= len(subscription.names):
            candidates = [n for n in updated if n in subscription.names]
        else:
            candidates = [n for n in subscription.names if n in updated]
        resources = [
            r
            for r in (present.get(n) for n in candidates)
            if r is not None and has.get(r.name) != r.version
        ]
        resources.sort(key=lambda r: r.name)
        return resources

    @staticmethod
    def _joined(resources: list[Resource]) -> tuple[tuple[Resource, ...], bytes]:
        return tuple(resources), b"".join(r.sotw_field for r in resources)

    def _send(
        self,
        state: TypeState,
        version: str,
        resources: Sequence[Resource],
        body: bytes | None,
        cache_state: CacheState,
    ) -> None:
        nonce = self.next_nonce()
        if body is None:
            body = b"".join(r.sotw_field for r in resources)
        data = encoding.sotw_response(version, state.type_url, nonce, body)
        self.record_send(state, version, nonce, data, cache_state)
