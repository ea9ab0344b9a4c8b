"""The part of a translation that reads the inventory: per resource, the one registry
service it is made of.

A group's clusters, listeners, routes and secrets are made of the operator config (and the
mesh's identities) alone; only endpoint assignments read the registry, each one a single
service's instances. A ``Slots`` is that list: in output order, which service each message
reads and the (cached, pure) function that makes it. Filling it from an inventory gives
the messages; refilling it after some services changed redoes only their positions, so an
endpoint change costs O(that service), not O(every service).
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf.message import Message

from xds_server.model.inventory import Inventory, Service

#: Makes one message of one registry service (``None`` when the registry lacks it).
Maker = Callable[[Service | None], Message]


def _no_positions() -> Mapping[str, tuple[int, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Slots:
    """Per position, the service it reads and its maker (see the module docstring)."""

    services: tuple[str, ...] = ()
    makers: tuple[Maker, ...] = ()
    #: Per service, the positions that read it.
    positions: Mapping[str, tuple[int, ...]] = field(default_factory=_no_positions)

    @staticmethod
    def of(pairs: Iterable[tuple[str, Maker]]) -> Slots:
        listed = tuple(pairs)
        where: dict[str, list[int]] = {}
        for index, (service, _) in enumerate(listed):
            where.setdefault(service, []).append(index)
        return Slots(
            services=tuple(service for service, _ in listed),
            makers=tuple(maker for _, maker in listed),
            positions=MappingProxyType({s: tuple(p) for s, p in where.items()}),
        )

    def fill(self, inventory: Inventory) -> tuple[Message, ...]:
        """Every position's message, made of ``inventory``."""
        found = inventory.services.get
        pairs = zip(self.services, self.makers, strict=True)
        return tuple(make(found(name)) for name, make in pairs)

    def refill(
        self, previous: tuple[Message, ...], inventory: Inventory, changed: Iterable[str]
    ) -> tuple[Message, ...]:
        """``fill(inventory)`` when ``previous`` is the fill of an inventory that differs from
        ``inventory`` in the services ``changed`` only: the other positions are kept as they
        are (the very same messages, and ``previous`` itself if no position reads a changed
        service)."""
        touched = [index for name in changed for index in self.positions.get(name, ())]
        if not touched:
            return previous
        result = list(previous)
        found = inventory.services.get
        for index in touched:
            result[index] = self.makers[index](found(self.services[index]))
        return tuple(result)


NO_SLOTS = Slots()


def _same(message: Message, service: Service | None) -> Message:
    return message


def constant(message: Message) -> Maker:
    """A maker that ignores the service: ``message`` (the very same object) whatever the
    registry holds (an assignment that fails closed, for instance)."""
    return functools.partial(_same, message)


def changed_services(before: Inventory, after: Inventory) -> frozenset[str]:
    """The names of the services added, removed or replaced between two inventories. The
    sources hand over an unchanged ``Service`` as the very same object, so this compares
    identities: a service rebuilt equal counts as changed (refilling it gives equal
    messages)."""
    old, new = before.services, after.services
    if len(old) == len(new):
        names = list(new)
        if names == list(old):  # the same names in the same order: compare in one pass
            differ = map(operator.is_not, old.values(), new.values())
            return frozenset(itertools.compress(names, differ))
    old_get = old.get
    changed = {name for name, service in new.items() if old_get(name) is not service}
    if len(old) != len(new) - sum(1 for name in changed if name not in old):
        changed.update(name for name in old if name not in new)
    return frozenset(changed)
