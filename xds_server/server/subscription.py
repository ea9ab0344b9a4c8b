"""What one stream has subscribed to, per type, and what the client already holds."""

from __future__ import annotations

import weakref
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from xds_server.cache.snapshot import Resource
from xds_server.cache.types import CLUSTER, LISTENER, WILDCARD_BY_DEFAULT
from xds_server.status import TypeStatus

WILDCARD = "*"
#: In ``TypeState.client_has``: a name the client was told does not exist.
ABSENT = ""

#: Types whose SotW responses must hold the complete state of the world. For the other
#: types a SotW response may carry only the resources that changed (xDS protocol doc,
#: "Grouping resources into responses").
FULL_STATE_TYPES = frozenset({CLUSTER, LISTENER})

_NO_NAMES: frozenset[str] = frozenset()

#: Equal subscriptions share one set (a thousand Envoys asking for the same thousand
#: clusters hold one set of names, not a thousand). Keys are copies of the values, so an
#: entry goes away with the last stream using it.
_shared_sets: weakref.WeakValueDictionary[frozenset[str], frozenset[str]] = (
    weakref.WeakValueDictionary()
)
#: SotW: the resource names of a request, by the request's bytes without version and nonce
#: (see ``sotw.names_key``), so a repeated list of names is recognised without decoding it.
_names_by_request: weakref.WeakValueDictionary[bytes, frozenset[str]] = (
    weakref.WeakValueDictionary()
)


def shared_names(names: Iterable[str]) -> frozenset[str]:
    """A frozenset equal to ``names``, the same object for every equal subscription."""
    value = names if isinstance(names, frozenset) else frozenset(names)
    if not value:
        return _NO_NAMES
    found = _shared_sets.get(value)
    if found is not None:
        return found
    _shared_sets[frozenset(list(value))] = value
    return value


def names_for_key(key: bytes) -> frozenset[str] | None:
    """The shared names of a SotW request seen before with the same ``key``."""
    return _names_by_request.get(key)


def remember_names(key: bytes, names: Iterable[str]) -> frozenset[str]:
    """Decode a request's names once; later requests with the same ``key`` reuse them."""
    shared = shared_names(names)
    if shared:
        _names_by_request[key] = shared
    return shared


@dataclass(slots=True)
class Subscription:
    """Wildcard flag plus explicitly named resources."""

    wildcard: bool = False
    #: SotW only: subscribed by an empty name list on the first request (legacy wildcard);
    #: later empty lists keep the wildcard.
    legacy_wildcard: bool = False
    #: Shared between streams (``shared_names``): replaced, never mutated.
    names: frozenset[str] = _NO_NAMES
    #: SotW: the (shared) set of names of the last request applied.
    requested: frozenset[str] | None = None

    def covers(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def apply_sotw(self, requested: Collection[str], first: bool, type_url: str) -> bool:
        """Replace the subscription from a SotW request; True if it changed."""
        before = (self.wildcard, self.names)
        if not requested and (self.legacy_wildcard or (first and type_url in WILDCARD_BY_DEFAULT)):
            self.legacy_wildcard = True
            self.wildcard = True
            self.names = _NO_NAMES
        else:
            self.legacy_wildcard = False
            names = frozenset(requested)
            self.wildcard = WILDCARD in names
            if self.wildcard:
                names = names - {WILDCARD}
            self.names = shared_names(names)
        return before != (self.wildcard, self.names)

    def apply_delta(
        self, subscribe: list[str], unsubscribe: list[str], first: bool, type_url: str
    ) -> set[str]:
        """Apply a delta request; returns the names no longer covered (to forget)."""
        if first and not subscribe and type_url in WILDCARD_BY_DEFAULT:
            self.wildcard = True
        added = set(subscribe)
        if WILDCARD in added:
            self.wildcard = True
            added.discard(WILDCARD)
        dropped = set(unsubscribe)
        if WILDCARD in dropped:
            self.wildcard = False
            dropped.discard(WILDCARD)
        if added - self.names or dropped & self.names:
            self.names = shared_names((self.names | added) - dropped)
        return {name for name in dropped if not self.covers(name)}


@dataclass(slots=True)
class TypeState:
    """Per stream and type: subscription, what the client holds, and the last nonce."""

    type_url: str
    status: TypeStatus
    subscription: Subscription = field(default_factory=Subscription)
    #: name -> version the client holds (or was sent; a NACKed version counts as held so it
    #: is never re-sent). ``ABSENT`` marks a name the client was told does not exist.
    #: May be a read-only mapping shared with other streams (a whole SotW state of the
    #: world); ``owned_client_has`` gives a dictionary of this stream's own to change.
    client_has: Mapping[str, str] = field(default_factory=dict)
    nonce: str = ""
    #: This stream's last response of the type (the one ``nonce`` names): its version, the
    #: set time of the cache state behind it (monotonic), and the last version ACKed here.
    #: The proxy's ``status`` is shared by every stream of its node, so these stay per stream.
    sent_version: str = ""
    sent_set_at: float | None = None
    acked_version: str | None = None
    started: bool = False
    #: SotW full-state types: the version of the last complete set sent, and that set (kept
    #: for make-before-break, when removed resources are sent once more beside the new ones).
    full_version: str | None = None
    sent_resources: Mapping[str, Resource] = field(default_factory=dict)
    #: Answer the next request even if nothing changed (EDS after a CDS update, so that
    #: clusters re-created by the update finish warming).
    answer_next_request: bool = False
    #: The serial of the snapshot this type is in sync with: every subscribed resource of
    #: that snapshot is held at its version (see ``Snapshot.changes``). None: unknown.
    synced_serial: int | None = None

    def owned_client_has(self) -> dict[str, str]:
        """``client_has`` as a dictionary this stream may change (copied once if shared)."""
        has = self.client_has
        if type(has) is not dict:
            has = dict(has)
            self.set_client_has(has)
        return has

    def set_client_has(self, has: Mapping[str, str]) -> None:
        self.client_has = has
        self.status.held = has

    def hold(self, resources: Iterable[Resource], removed: Iterable[str] = ()) -> None:
        """Record what the client holds once sent ``resources`` (at their versions) and told
        ``removed`` are gone (``ABSENT`` if it subscribed to them by name, forgotten if it
        held them through the wildcard)."""
        has = self.owned_client_has()
        for resource in resources:
            has[resource.name] = resource.version
        for name in removed:
            if name in self.subscription.names:
                has[name] = ABSENT
            else:
                has.pop(name, None)
