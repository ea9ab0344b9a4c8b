"""What every stream computes alike from one snapshot, computed once per snapshot.

A thousand streams in the same position (subscribed alike, holding the same shared map)
would each join the same response body and build the same name -> version map; these memos
hand every one of them what the first one built. They are the server's, not the
``Snapshot``'s (a plain container): one small table per snapshot, found by the snapshot's
serial and dropped when the snapshot is.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from xds_server.cache.snapshot import Resource, Snapshot

_V = TypeVar("_V")

#: Distinct entries memoised per snapshot and kind of memo (a bound against clients that
#: subscribe to ever different sets; beyond it, results are computed without the memo).
_MAX_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class Selection:
    """Some resources of one type, sorted by name, with what every stream sending them needs.

    Shared by all streams that send the same selection of the same snapshot: the response
    body is joined once, and the name -> version map (what a client then holds) is one
    read-only mapping instead of one dictionary per stream.
    """

    resources: tuple[Resource, ...]
    #: ``DiscoveryResponse.resources`` fields of every resource, concatenated.
    sotw_body: bytes
    #: ``DeltaDiscoveryResponse.resources`` fields, concatenated.
    delta_body: bytes
    versions: Mapping[str, str]
    by_name: Mapping[str, Resource]
    #: Names asked for that the snapshot does not have, sorted (what a delta stream
    #: subscribing to them by name reports removed).
    absent: tuple[str, ...] = ()

    @staticmethod
    def of(resources: Iterable[Resource], absent: Iterable[str] = ()) -> Selection:
        ordered = tuple(sorted(resources, key=lambda r: r.name))
        return Selection(
            resources=ordered,
            sotw_body=b"".join(r.sotw_field for r in ordered),
            delta_body=b"".join(r.delta_field for r in ordered),
            versions=MappingProxyType({r.name: r.version for r in ordered}),
            by_name=MappingProxyType({r.name: r for r in ordered}),
            absent=tuple(sorted(absent)),
        )


class _Memo:
    """The memos of one snapshot. Holds no reference to the snapshot itself, so the
    snapshot can go (and take this table with it) once no stream serves it."""

    __slots__ = ("by_identity", "held", "selections")

    def __init__(self) -> None:
        self.selections: dict[tuple[str, frozenset[str] | None], Selection] = {}
        self.held: dict[tuple[str, frozenset[str] | None], Mapping[str, str]] = {}
        self.by_identity: dict[tuple[Any, ...], tuple[tuple[object, ...], Any]] = {}


_memos: dict[int, _Memo] = {}


def _memo_of(snapshot: Snapshot) -> _Memo:
    memo = _memos.get(snapshot.serial)
    if memo is None:
        memo = _memos[snapshot.serial] = _Memo()
        weakref.finalize(snapshot, _memos.pop, snapshot.serial, None)
    return memo


def full_state(snapshot: Snapshot, type_url: str) -> Selection:
    """Every resource of a type (what a wildcard subscriber gets)."""
    selections = _memo_of(snapshot).selections
    key = (type_url, None)
    found = selections.get(key)
    if found is None:
        found = selections[key] = Selection.of(snapshot.of_type(type_url).values())
    return found


def selection(snapshot: Snapshot, type_url: str, names: frozenset[str]) -> Selection:
    """The named resources of a type that exist (and the names that do not), per distinct
    set of names."""
    selections = _memo_of(snapshot).selections
    key = (type_url, names)
    found = selections.get(key)
    if found is None:
        present = snapshot.of_type(type_url)
        found = Selection.of(
            (present[n] for n in names if n in present), (n for n in names if n not in present)
        )
        if len(selections) < _MAX_ENTRIES:
            selections[key] = found
    return found


def held_versions(
    snapshot: Snapshot, type_url: str, names: frozenset[str] | None
) -> Mapping[str, str] | None:
    """What a client subscribed to ``names`` (None: wildcard) holds once in sync with
    ``snapshot``, name -> version: one read-only map shared by every such client. None when
    too many distinct subscriptions have a map already (the caller keeps its own)."""
    memo = _memo_of(snapshot)
    key = (type_url, names)
    found = memo.selections.get(key)
    if found is not None:
        return found.versions
    held = memo.held.get(key)
    if held is None:
        if len(memo.held) >= _MAX_ENTRIES:
            return None
        present = snapshot.of_type(type_url)
        if names is None:
            held = MappingProxyType({n: r.version for n, r in present.items()})
        else:
            held = MappingProxyType({n: present[n].version for n in names if n in present})
        memo.held[key] = held
    return held


def computed_once(
    snapshot: Snapshot, key: str, objects: tuple[object, ...], compute: Callable[[], _V]
) -> _V:
    """``compute()``, once per snapshot for the same ``key`` (by value) and ``objects``
    (by identity): what every stream in the same position would compute alike. Not
    memoised beyond ``_MAX_ENTRIES`` distinct positions."""
    by_identity = _memo_of(snapshot).by_identity
    memo_key = (key, *(id(o) for o in objects))
    hit = by_identity.get(memo_key)
    if hit is not None and all(a is b for a, b in zip(hit[0], objects, strict=True)):
        value: _V = hit[1]
        return value
    value = compute()
    if len(by_identity) < _MAX_ENTRIES:
        by_identity[memo_key] = (objects, value)
    return value
