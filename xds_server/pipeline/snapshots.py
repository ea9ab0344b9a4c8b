"""The data flow: (Inventory, Config) → translate → Snapshot per group → cache.

Sources and the store publish new immutable values here; a single task rebuilds the
snapshots one debounce window after a change (``Debouncer``, eager): a burst of changes
costs one build, and under constant churn builds follow one window after the other, each
taking what arrived meanwhile, rather than one per ``max_delay``. Translation and builds
are incremental (``translate``, ``Snapshot.build``), so a build costs O(what changed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from xds_server.cache.consistency import InconsistentSnapshot
from xds_server.cache.snapshot import SharedResources, Snapshot
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from xds_server.model.config import Config
from xds_server.model.inventory import Inventory
from xds_server.model.workload import NO_IDENTITIES, Identities
from xds_server.runtime.debounce import Debouncer
from xds_server.runtime.gc_pause import gc_paused
from xds_server.translate.output import ProxyResources

log = logging.getLogger("xds_server.pipeline")
#: The gRPC clients' resources among ``_built``'s keys (group names; no group has it).
_GRPC_KEY = "\x00grpc"


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


def by_type(resources: GroupResources) -> Mapping[str, Iterable[Any]] | Iterable[Any]:
    """What ``Snapshot.build`` is given: translation's tuples per type URL as they are (the
    cheap path after a small change: see ``Snapshot.build``), else the flat messages."""
    if isinstance(resources, ProxyResources):
        return {
            CLUSTER: resources.clusters,
            ENDPOINT: resources.endpoints,
            LISTENER: resources.listeners,
            ROUTE: resources.routes,
            SECRET: resources.secrets,
        }
    return resources.messages()


def _build(
    messages: Mapping[str, Iterable[Any]] | Iterable[Any],
    previous: Snapshot,
    shared: SharedResources,
) -> Snapshot:
    """A snapshot of ``messages``; ``previous`` itself when nothing changed, so the streams
    of a group whose resources did not change are not even woken."""
    snapshot = Snapshot.build(messages, previous=previous, shared=shared)
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
        self._debouncer = Debouncer(debounce, max_delay, eager=True)
        self._on_build = on_build
        #: Per group, the resources of the last build and the snapshot built of them:
        #: translation hands over an unchanged group's resources as the very same object
        #: (``translate.mesh`` memoises each sidecar's), whose snapshot is then reused
        #: as it is, without even comparing its resources.
        self._built: dict[str | None, tuple[GroupResources, Snapshot]] = {}

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
        translation = self._translate_paused(self.inventory, self.config, self.identities)
        return self._publish(translation, started)

    async def build_in_worker(self) -> BuildResult | None:
        """``build_now``, with the translation in a worker thread.

        Translation is pure and takes its inputs as they are now; at thousands of routes it
        takes hundreds of milliseconds, which on the event loop would stall every ADS stream
        and the admin API for as long (the loop-lag figures of docs/performance.md). In a
        thread, the interpreter hands the loop its turn every few milliseconds. The snapshot
        build and the publication stay on the loop: the cache and its watches are the
        loop's alone. Changes that arrive meanwhile poke the debouncer for the next build.
        """
        if not self.inventory.synced:
            return None
        started = time.perf_counter()
        inputs = (self.inventory, self.config, self.identities)
        translation = await asyncio.to_thread(self._translate_paused, *inputs)
        return self._publish(translation, started)

    def _translate_paused(
        self, inventory: Inventory, config: Config, identities: Identities
    ) -> Translation:
        with gc_paused():
            return self._translate(inventory, config, identities)

    def _publish(self, translation: Translation, started: float) -> BuildResult:
        error: str | None = None
        try:
            with gc_paused():
                self._build_all(translation)
        except InconsistentSnapshot as problem:
            error = f"inconsistent snapshot, keeping the previous one: {problem}"
            log.error(error)
        result = BuildResult(time.perf_counter() - started, self.cache.state.generation, error)
        if self._on_build is not None:
            self._on_build(result)
        return result

    def _build_all(self, translation: Translation) -> None:
        state = self.cache.state
        built: dict[str | None, tuple[GroupResources, Snapshot]] = {}
        shared = SharedResources()  # what groups have in common is serialised once
        default = self._snapshot(built, shared, None, translation.default, state.default)
        groups: dict[str, Snapshot] = {}
        for name, resources in translation.groups.items():
            previous = state.groups.get(name, state.default)
            if resources is translation.default and previous is state.default:
                groups[name] = default  # the default's resources: share its snapshot
            else:
                groups[name] = self._snapshot(built, shared, name, resources, previous)
        # What proxyless gRPC clients get (``translate.proxyless``), whatever their group.
        grpc_resources: GroupResources | None = getattr(translation, "grpc", None)
        grpc = None
        if grpc_resources is not None:
            grpc = self._snapshot(built, shared, _GRPC_KEY, grpc_resources, state.grpc)
        self.cache.set_snapshots(default, groups, grpc=grpc)
        self._built = built

    def _snapshot(
        self,
        built: dict[str | None, tuple[GroupResources, Snapshot]],
        shared: SharedResources,
        key: str | None,
        resources: GroupResources,
        previous: Snapshot,
    ) -> Snapshot:
        """``resources``' snapshot: ``previous`` if it was built of these very resources."""
        last = self._built.get(key)
        if last is not None and last[0] is resources and last[1] is previous:
            snapshot = previous
        else:
            snapshot = _build(by_type(resources), previous, shared)
        built[key] = (resources, snapshot)
        return snapshot

    async def run(self) -> None:
        """Rebuild after every settled burst of changes, until cancelled."""
        while True:
            await self._debouncer.wait()
            try:
                await self.build_in_worker()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("snapshot build failed; Envoy keeps the previous config")
