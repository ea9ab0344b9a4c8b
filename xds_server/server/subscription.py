"""What one stream has subscribed to, per type, and what the client already holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from xds_server.cache.snapshot import Resource
from xds_server.cache.status import TypeStatus
from xds_server.cache.types import CLUSTER, LISTENER, WILDCARD_BY_DEFAULT

WILDCARD = "*"

#: Types whose SotW responses must hold the complete state of the world. For the other
#: types a SotW response may carry only the resources that changed (xDS protocol doc,
#: "Grouping resources into responses").
FULL_STATE_TYPES = frozenset({CLUSTER, LISTENER})


@dataclass(slots=True)
class Subscription:
    """Wildcard flag plus explicitly named resources."""

    wildcard: bool = False
    #: SotW only: subscribed by an empty name list on the first request (legacy wildcard);
    #: later empty lists keep the wildcard.
    legacy_wildcard: bool = False
    names: set[str] = field(default_factory=set)

    def covers(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def apply_sotw(self, requested: list[str], first: bool, type_url: str) -> bool:
        """Replace the subscription from a SotW request; True if it changed."""
        before = (self.wildcard, frozenset(self.names))
        if not requested and (self.legacy_wildcard or (first and type_url in WILDCARD_BY_DEFAULT)):
            self.legacy_wildcard = True
            self.wildcard = True
            self.names = set()
        else:
            self.legacy_wildcard = False
            names = set(requested)
            self.wildcard = WILDCARD in names
            names.discard(WILDCARD)
            self.names = names
        return before != (self.wildcard, frozenset(self.names))

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
        self.names |= added
        dropped = set(unsubscribe)
        if WILDCARD in dropped:
            self.wildcard = False
            dropped.discard(WILDCARD)
        self.names -= dropped
        return {name for name in dropped if not self.covers(name)}


@dataclass(slots=True)
class TypeState:
    """Per stream and type: subscription, what the client holds, and the last nonce."""

    type_url: str
    status: TypeStatus
    subscription: Subscription = field(default_factory=Subscription)
    #: name -> version the client holds (or was sent; a NACKed version counts as held so it
    #: is never re-sent). ``ABSENT`` marks a name the client was told does not exist.
    client_has: dict[str, str] = field(default_factory=dict)
    nonce: str = ""
    started: bool = False
    #: SotW full-state types: the version of the last complete set sent, and that set (kept
    #: for make-before-break, when removed resources are sent once more beside the new ones).
    full_version: str | None = None
    sent_resources: dict[str, Resource] = field(default_factory=dict)
    #: Answer the next request even if nothing changed (EDS after a CDS update, so that
    #: clusters re-created by the update finish warming).
    answer_next_request: bool = False


ABSENT = ""
