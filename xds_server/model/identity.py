"""Results memoised by the identity of the object they were computed from.

The store and the registry hand over unchanged documents and services as the very same
objects from one revision to the next (see ``ConfigParser``), so a result looked up by
``id()`` is found without hashing or comparing the object: a write or an endpoint change
recomputes only what it touched. An entry holds its object, so the id cannot be reused by
another object while the entry lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IdentityMemo(Generic[K, V]):
    """At most ``limit`` entries; when full it starts afresh (the live set is refilled on the
    next pass, and there is nothing to keep an order for)."""

    def __init__(self, compute: Callable[[K], V], limit: int = 8192) -> None:
        self._compute = compute
        self._limit = limit
        self._entries: dict[int, tuple[K, V]] = {}

    def __call__(self, key: K) -> V:
        hit = self._entries.get(id(key))
        if hit is not None and hit[0] is key:
            return hit[1]
        value = self._compute(key)
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[id(key)] = (key, value)
        return value

    def clear(self) -> None:
        self._entries.clear()
