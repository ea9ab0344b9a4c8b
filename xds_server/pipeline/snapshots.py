"""The data flow: (Inventory, Config) → translate → Snapshot per group → cache.

Sources and the store publish new immutable values here; a single task rebuilds the
snapshots once a burst of changes has settled, so one Consul flap storm costs one build.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from xds_server.cache.consistency import InconsistentSnapshot
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.model.config import Config
from xds_server.model.inventory import Inventory
from xds_server.model.workload import NO_IDENTITIES, Identities
from xds_server.runtime.debounce import Debouncer

log = logging.getLogger("xds_server.pipeline")


class GroupResources(Protocol):
    def messages(self) -> Iterable[Any]: ...


class Translation(Protocol):
    @property
    def default(self) -> GroupResources: ...

    @property
    def groups(self) -> Mapping[str, GroupResources]: ...


@dataclass(frozen=True, slots=True)
class BuildResult:
    duration: float
    generation: int
    error: str | None = None


def _build(messages: Iterable[Any], previous: Snapshot) -> Snapshot:
    """A snapshot of ``messages``; ``previous`` itself when nothing changed, so the streams
    of a group whose resources did not change are not even woken."""
    snapshot = Snapshot.build(messages, previous=previous)
    return previous if snapshot.unchanged else snapshot


class SnapshotPipeline:
    def __init__(
        self,
        cache: SnapshotCache,
        translate: Callable[[Inventory, Config, Identities], Translation],
        inventory: Inventory,
        config: Config,
        debounce: float = 0.1,
        max_delay: float = 1.0,
        on_build: Callable[[BuildResult], None] | None = None,
        identities: Identities = NO_IDENTITIES,
    ) -> None:
        self.cache = cache
        self._translate = translate
        self.inventory = inventory
        self.config = config
        self.identities = identities
        self._debouncer = Debouncer(debounce, max_delay)
        self._on_build = on_build

    def set_inventory(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._debouncer.poke()

    def set_config(self, config: Config) -> None:
        self.config = config
        self._debouncer.poke()

    def set_identities(self, identities: Identities) -> None:
        """The mesh CA issued or re-issued certificates (or rotated its root)."""
        self.identities = identities
        self._debouncer.poke()

    def build_now(self) -> BuildResult | None:
        """Translate and publish synchronously; nothing before the first inventory sync.

        Until the registry has completed one sync, publishing would hand Envoy clusters
        without endpoints; the cache stays empty and streams wait instead.
        """
        if not self.inventory.synced:
            return None
        started = time.perf_counter()
        error: str | None = None
        try:
            translation = self._translate(self.inventory, self.config, self.identities)
            state = self.cache.state
            default = _build(translation.default.messages(), state.default)
            groups: dict[str, Snapshot] = {}
            for name, resources in translation.groups.items():
                previous = state.groups.get(name, state.default)
                if resources is translation.default and previous is state.default:
                    groups[name] = default  # the default's resources: share its snapshot
                else:
                    groups[name] = _build(resources.messages(), previous)
            self.cache.set_snapshots(default, groups)
        except InconsistentSnapshot as problem:
            error = f"inconsistent snapshot, keeping the previous one: {problem}"
            log.error(error)
        result = BuildResult(time.perf_counter() - started, self.cache.state.generation, error)
        if self._on_build is not None:
            self._on_build(result)
        return result

    async def run(self) -> None:
        """Rebuild after every settled burst of changes, until cancelled."""
        while True:
            await self._debouncer.wait()
            try:
                self.build_now()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("snapshot build failed; Envoy keeps the previous config")
