"""An immutable, versioned set of xDS resources for one proxy group."""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, TypeVar, overload

from google.protobuf.message import Message

from xds_server.cache import encoding
from xds_server.cache.types import PUSH_ORDER, type_url_of

_V = TypeVar("_V")


def content_version(data: bytes) -> str:
    """A short, stable hash of serialised bytes: equal content, equal version."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Resource:
    """One serialised resource. Its bytes are shared by every stream that sends it."""

    name: str
    type_url: str
    version: str
    body: bytes
    #: The resource wrapped in ``Any`` and encoded as a ``DiscoveryResponse.resources`` entry.
    sotw_field: bytes
    #: The resource wrapped in ``Resource`` and encoded as a ``DeltaDiscoveryResponse`` entry.
    delta_field: bytes

    @staticmethod
    def of(name: str, message: Message) -> Resource:
        type_url = type_url_of(message.DESCRIPTOR.full_name)
        body = message.SerializeToString(deterministic=True)
        version = content_version(body)
        sotw, delta = encoding.resource_fields(_any_prefix(type_url), name, version, body)
        return Resource(
            name=name,
            type_url=type_url,
            version=version,
            body=body,
            sotw_field=sotw,
            delta_field=delta,
        )


@lru_cache(maxsize=64)
def _any_prefix(type_url: str) -> bytes:
    return encoding.any_type_prefix(type_url)


class SharedResources:
    """The resources serialised by the snapshots of one build, by message identity:
    translation hands a resource that several groups have (the trust bundle is in every
    sidecar's) to each of them as the very same message, so it is serialised and hashed
    once per build, not once per group. Only for the duration of one build: an entry holds
    its message (protobuf messages take no weak references), and what outlives a build is
    reused through ``previous`` instead. Messages are never mutated once translated."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Message, Resource]] = {}

    def get(self, message: Message) -> Resource | None:
        hit = self._entries.get(id(message))
        return hit[1] if hit is not None and hit[0] is message else None

    def put(self, message: Message, resource: Resource) -> None:
        self._entries[id(message)] = (message, resource)


def resource_name(message: Message) -> str:
    """The xDS name of a resource: ``cluster_name`` for endpoints, ``name`` otherwise."""
    if message.DESCRIPTOR.full_name == "envoy.config.endpoint.v3.ClusterLoadAssignment":
        return str(getattr(message, "cluster_name"))  # noqa: B009 - untyped protos
    return str(getattr(message, "name"))  # noqa: B009


def set_version(resources: Iterable[Resource]) -> str:
    """The version of a set of resources: a hash of their names and versions."""
    digest = hashlib.blake2b(digest_size=8)
    for resource in sorted(resources, key=lambda r: r.name):
        digest.update(resource.name.encode())
        digest.update(b"\0")
        digest.update(resource.version.encode())
        digest.update(b"\n")
    return digest.hexdigest()


_EMPTY: Mapping[str, Resource] = MappingProxyType({})
_EMPTY_BY_TYPE: Mapping[str, Mapping[str, Resource]] = MappingProxyType({})
_serials = itertools.count(1)
#: How many builds back a snapshot remembers what changed.
_HISTORY = 8


@dataclass(frozen=True, slots=True)
class TypeChanges:
    """What changed in one type between a snapshot and the one it was built from."""

    #: Names added or whose resource changed.
    updated: frozenset[str]
    #: Names no longer present.
    removed: frozenset[str]


#: Changes per type URL; a type not in the mapping did not change.
Changes = Mapping[str, TypeChanges]


@dataclass(frozen=True)
class Snapshot:
    """Resources per type URL, each keyed by name. Never mutated once built.

    A plain container: what streams share when they send it (bodies, name -> version maps)
    is memoised on the server side (``xds_server.server.shared``).
    """

    resources: Mapping[str, Mapping[str, Resource]]
    #: The protobuf messages the snapshot was built from, kept for consistency checks and
    #: config dumps; never mutated.
    messages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    _versions: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    #: Unique per snapshot object: streams remember which snapshot they are in sync with.
    serial: int = field(
        default_factory=lambda: next(_serials), init=False, repr=False, compare=False
    )
    #: The serial of the snapshot this one was built from (``build(previous=...)``).
    base_serial: int | None = field(default=None, repr=False, compare=False)
    #: What changed since that snapshot. None when the snapshot was not built from another.
    changes: Changes | None = field(default=None, repr=False, compare=False)
    #: ``(base_serial, changes)`` of this snapshot and of its ancestors, newest first (at
    #: most ``_HISTORY``), so a stream that missed a snapshot or two still gets a diff.
    history: tuple[tuple[int, Changes], ...] = field(default=(), repr=False, compare=False)
    _since: dict[int, Changes | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    #: Per type URL, the sequence of messages it was built from, when built from a mapping
    #: of such sequences each of one type and unique names (see ``build``).
    sources: Mapping[str, Sequence[Message]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @staticmethod
    def build(
        messages: Mapping[str, Iterable[Message]] | Iterable[Message],
        previous: Snapshot | None = None,
        shared: SharedResources | None = None,
    ) -> Snapshot:
        """Serialise messages into a snapshot.

        ``messages`` is either a mapping from type URL to messages or a flat iterable.
        With ``previous``, a message equal to the one already serialised there is reused, so
        a small change to a large snapshot costs comparisons rather than serialisations, and
        the snapshot records what changed since ``previous`` (``changes``), so streams in
        sync with ``previous`` look only at that. Snapshots built with the same ``shared``
        serialise a message they have in common once.

        A mapping of sequences (tuples) is the cheap way after a small change: a type whose
        sequence is the very one ``previous`` was built from keeps ``previous``'s resources
        as they are, and one of the same length is compared position by position by
        identity, so only the messages that are not the very same objects are looked at
        (translation hands over unchanged ones as they are). The result is the same as
        from the flat messages in the same order.
        """
        shared = shared or SharedResources()
        by_type: Mapping[str, Mapping[str, Resource]]
        kept: Mapping[str, Mapping[str, Any]]
        sources: Mapping[str, Sequence[Message]] = {}
        found = None
        if isinstance(messages, Mapping):
            chunks = {t: m if isinstance(m, tuple) else tuple(m) for t, m in messages.items()}
            found = _serialise_sources(chunks, previous, shared)
            flat: Iterable[Message] = (m for group in chunks.values() for m in group)
        else:
            flat = messages
        if found is None:  # a flat iterable, or not one type per key
            by_type, kept, updated = _serialise(flat, previous, shared)
        else:
            by_type, kept, updated, sources = found
        resources = _frozen(by_type)
        if previous is None:
            return Snapshot(resources=resources, messages=_frozen(kept), sources=sources)
        changes = MappingProxyType(_changes_between(previous, resources, updated))
        snapshot = Snapshot(
            resources=resources,
            messages=_frozen(kept),
            base_serial=previous.serial,
            changes=changes,
            history=((previous.serial, changes), *previous.history[: _HISTORY - 1]),
            sources=sources,
        )
        for type_url, version in previous._versions.items():
            if resources.get(type_url) is previous.resources.get(type_url):
                snapshot._versions[type_url] = version  # the very same resources
        return snapshot

    def changes_since(self, serial: int | None) -> Changes | None:
        """What changed since the snapshot ``serial`` (an ancestor, through ``build``'s
        ``previous``), per type URL: ``updated`` names present here whose resource may differ,
        ``removed`` names that were there and are not here. None when unknown."""
        if serial is None:
            return None
        if serial == self.base_serial:
            return self.changes
        if serial in self._since:
            return self._since[serial]
        steps = self._steps_since(serial)
        combined = self._combined(steps) if steps else None
        if len(self._since) < _HISTORY:
            self._since[serial] = combined
        return combined

    def _steps_since(self, serial: int) -> list[Changes]:
        """The recorded changes from ``serial`` to here, newest first; empty when ``serial``
        is not a recent ancestor."""
        steps = []
        for base, changes in self.history:
            steps.append(changes)
            if base == serial:
                return steps
        return []

    def _combined(self, steps: list[Changes]) -> dict[str, TypeChanges]:
        updated: dict[str, set[str]] = {}
        removed: dict[str, set[str]] = {}
        for changes in steps:
            for type_url, change in changes.items():
                updated.setdefault(type_url, set()).update(change.updated)
                removed.setdefault(type_url, set()).update(change.removed)
        combined = {}
        for type_url in updated:
            present = self.of_type(type_url)
            names = frozenset(n for n in updated[type_url] if n in present)
            gone = frozenset(n for n in removed[type_url] if n not in present)
            if names or gone:
                combined[type_url] = TypeChanges(names, gone)
        return combined

    @property
    def unchanged(self) -> bool:
        """Built from a previous snapshot and identical to it (same resources)."""
        return self.changes is not None and not self.changes

    def of_type(self, type_url: str) -> Mapping[str, Resource]:
        return self.resources.get(type_url, _EMPTY)

    def version(self, type_url: str) -> str:
        """The version of all resources of a type (what a wildcard subscriber holds)."""
        cached = self._versions.get(type_url)
        if cached is None:
            cached = set_version(self.of_type(type_url).values())
            self._versions[type_url] = cached
        return cached

    def type_urls(self) -> tuple[str, ...]:
        known = [t for t in PUSH_ORDER if t in self.resources]
        return tuple(known + sorted(t for t in self.resources if t not in PUSH_ORDER))

    def __len__(self) -> int:
        return sum(len(r) for r in self.resources.values())


_ByType = dict[str, dict[str, _V]]
#: Per type URL: its resources (new, or ``previous``'s very mapping) and messages.
_Typed = dict[str, Mapping[str, _V]]


def _serialise_sources(
    sources: Mapping[str, tuple[Message, ...]], previous: Snapshot | None, shared: SharedResources
) -> tuple[_Typed[Resource], _Typed[Any], dict[str, set[str]], dict[str, Sequence[Message]]] | None:
    """``_serialise`` of a mapping from type URL to that type's messages, reusing what
    ``previous`` has of sequences it was built from (see ``Snapshot.build``); ``None`` when
    some message is not of its key's type (the caller then serialises them flat)."""
    by_type: _Typed[Resource] = {}
    kept: _Typed[Any] = {}
    updated: dict[str, set[str]] = {}
    recorded: dict[str, Sequence[Message]] = {}
    old_sources = previous.sources if previous is not None else {}
    for type_url, chunk in sources.items():
        if not chunk:
            continue
        old = old_sources.get(type_url)
        found = None
        if old is not None and previous is not None and len(old) == len(chunk):
            found = _reused(type_url, old, chunk, previous, shared)
        if found is None:
            found = _serialise(chunk, previous, shared, only=type_url)
            if found is None:
                return None
        resources, messages, names = found
        by_type[type_url], kept[type_url] = resources, messages
        if names:
            updated[type_url] = names
        if len(resources) == len(chunk):  # unique names: positions stand for names
            recorded[type_url] = chunk
    return by_type, kept, updated, recorded


def _reused(
    type_url: str,
    old: Sequence[Message],
    chunk: Sequence[Message],
    previous: Snapshot,
    shared: SharedResources,
) -> tuple[Mapping[str, Resource], Mapping[str, Any], set[str]] | None:
    """``previous``'s resources of ``type_url`` (built from ``old``) updated where ``chunk``
    has another message at a position; ``None`` if one of those is of another type or
    name (positions then no longer stand for the same names)."""
    differ = list(itertools.compress(range(len(chunk)), map(operator.is_not, old, chunk)))
    old_resources = previous.resources[type_url]
    old_messages = previous.messages[type_url]
    if not differ:
        return old_resources, old_messages, set()
    resources, messages = dict(old_resources), dict(old_messages)
    names: set[str] = set()
    for index in differ:
        message, before_message = chunk[index], old[index]
        name = resource_name(message)
        if message.DESCRIPTOR is not before_message.DESCRIPTOR or name != resource_name(
            before_message
        ):
            return None
        before = old_resources[name]
        resource = _resource(name, message, before_message, before, shared)
        if resource is not before:
            names.add(name)
        resources[name] = resource
        messages[name] = message
    return resources, messages, names


@overload
def _serialise(
    flat: Iterable[Message], previous: Snapshot | None, shared: SharedResources
) -> tuple[_ByType[Resource], _ByType[Any], dict[str, set[str]]]: ...


@overload
def _serialise(
    flat: Iterable[Message], previous: Snapshot | None, shared: SharedResources, only: str
) -> tuple[dict[str, Resource], dict[str, Any], set[str]] | None: ...


def _serialise(
    flat: Iterable[Message],
    previous: Snapshot | None,
    shared: SharedResources,
    only: str | None = None,
) -> (
    tuple[_ByType[Resource], _ByType[Any], dict[str, set[str]]]
    | tuple[dict[str, Resource], dict[str, Any], set[str]]
    | None
):
    """(resources, messages, names serialised anew) per type URL. A message equal to the one
    ``previous`` has under its name keeps that one's serialised resource. With ``only``,
    the messages must all be of that type URL (``None`` if one is not), and the result is
    that type's alone."""
    by_type: _ByType[Resource] = {}
    kept: _ByType[Any] = {}
    updated: dict[str, set[str]] = {}
    kinds: dict[
        Any,
        tuple[str, dict[str, Resource], dict[str, Any], Mapping[str, Any], Mapping[str, Resource]],
    ] = {}
    old_messages: Mapping[str, Mapping[str, Any]] = (
        previous.messages if previous is not None else {}
    )
    old_resources = previous.resources if previous is not None else _EMPTY_BY_TYPE
    for message in flat:
        # Per message type once: its type URL, where its resources go, what was there.
        descriptor = message.DESCRIPTOR
        kind = kinds.get(descriptor)
        if kind is None:
            type_url = type_url_of(descriptor.full_name)
            if only is not None and type_url != only:
                return None
            kind = kinds[descriptor] = (
                type_url,
                by_type.setdefault(type_url, {}),
                kept.setdefault(type_url, {}),
                old_messages.get(type_url, _EMPTY),
                old_resources.get(type_url, _EMPTY),
            )
        type_url, resources, messages_of_type, old_of_type, old_resources_of_type = kind
        name = resource_name(message)
        old = old_of_type.get(name)
        # Translation caches its per-item messages, so an unchanged one is usually the
        # very same object: no need to compare it field by field.
        if old is message:
            resource = old_resources_of_type[name]
        else:
            before = old_resources_of_type[name] if old is not None else None
            resource = _resource(name, message, old, before, shared)
            if resource is not before:
                updated.setdefault(type_url, set()).add(name)
        resources[name] = resource
        messages_of_type[name] = message
    if only is not None:
        return by_type.get(only, {}), kept.get(only, {}), updated.get(only, set())
    return by_type, kept, updated


def _resource(
    name: str, message: Message, old: Any, before: Resource | None, shared: SharedResources
) -> Resource:
    """``message``'s resource: the one serialised for this very message by another snapshot
    of the build (``shared``), else ``before`` (what the previous snapshot has under
    ``name``; ``old`` is its message) if equal, else a new one. ``before`` whenever the
    content is the same, so that an unchanged resource keeps its object."""
    resource = shared.get(message)
    if resource is None:
        equal = before is not None and old == message
        resource = before if equal and before is not None else Resource.of(name, message)
        shared.put(message, resource)
    if before is not None and resource.version == before.version:
        return before
    return resource


def _changes_between(
    previous: Snapshot,
    by_type: Mapping[str, Mapping[str, Resource]],
    updated: dict[str, set[str]],
) -> dict[str, TypeChanges]:
    """What differs from ``previous``, per type URL that changed."""
    changes = {}
    for type_url in previous.resources.keys() | by_type.keys():
        now = by_type.get(type_url, _EMPTY)
        before = previous.of_type(type_url)
        removed = frozenset() if now is before else frozenset(before.keys() - now.keys())
        names = frozenset(updated.get(type_url, ()))
        if names or removed:
            changes[type_url] = TypeChanges(names, removed)
    return changes


def _frozen(by_type: Mapping[str, Mapping[str, _V]]) -> Mapping[str, Mapping[str, _V]]:
    """Read-only views; a mapping reused from a previous snapshot (already one) as it is."""
    return MappingProxyType(
        {
            t: items if isinstance(items, MappingProxyType) else MappingProxyType(items)
            for t, items in by_type.items()
        }
    )


EMPTY_SNAPSHOT = Snapshot(resources=MappingProxyType({}))
