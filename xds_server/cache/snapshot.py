"""An immutable, versioned set of xDS resources for one proxy group."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from google.protobuf.message import Message

from xds_server.cache import encoding
from xds_server.cache.types import PUSH_ORDER, type_url_of


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
        any_bytes = encoding.any_message(type_url, body)
        return Resource(
            name=name,
            type_url=type_url,
            version=version,
            body=body,
            sotw_field=encoding.sotw_resource_field(any_bytes),
            delta_field=encoding.delta_resource_field(name, version, any_bytes),
        )


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


@dataclass(frozen=True)
class Snapshot:
    """Resources per type URL, each keyed by name. Never mutated once built."""

    resources: Mapping[str, Mapping[str, Resource]]
    #: The protobuf messages the snapshot was built from, kept for consistency checks and
    #: config dumps; never mutated.
    messages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    _versions: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    @staticmethod
    def build(
        messages: Mapping[str, Iterable[Message]] | Iterable[Message],
        previous: Snapshot | None = None,
    ) -> Snapshot:
        """Serialise messages into a snapshot.

        ``messages`` is either a mapping from type URL to messages or a flat iterable.
        With ``previous``, a message equal to the one already serialised there is reused, so
        a small change to a large snapshot costs comparisons rather than serialisations.
        """
        flat: Iterable[Message]
        if isinstance(messages, Mapping):
            flat = (m for group in messages.values() for m in group)
        else:
            flat = messages
        by_type: dict[str, dict[str, Resource]] = {}
        kept: dict[str, dict[str, Any]] = {}
        for message in flat:
            name = resource_name(message)
            type_url = type_url_of(message.DESCRIPTOR.full_name)
            reused = previous.reuse(type_url, name, message) if previous else None
            resource = reused or Resource.of(name, message)
            by_type.setdefault(type_url, {})[name] = resource
            kept.setdefault(type_url, {})[name] = message
        return Snapshot(
            resources=MappingProxyType(
                {t: MappingProxyType(r) for t, r in by_type.items()},
            ),
            messages=MappingProxyType({t: MappingProxyType(m) for t, m in kept.items()}),
        )

    def reuse(self, type_url: str, name: str, message: Message) -> Resource | None:
        old = self.messages.get(type_url, {}).get(name)
        if old is not None and old == message:
            return self.resources[type_url][name]
        return None

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


EMPTY_SNAPSHOT = Snapshot(resources=MappingProxyType({}))
