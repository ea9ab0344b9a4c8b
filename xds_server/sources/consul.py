"""The Consul source: keep an ``Inventory`` current with blocking queries, bounded.

One blocking query per service would not fit under an agent's 200 connections per client
for thousands of services, so each datacenter is watched with **three** blocking queries:

- ``/v1/catalog/services`` — which services exist and their tags;
- ``/v1/health/state/any?filter=Status != "passing"`` — the checks that are not passing
  (health.mdx documents ``Status`` as a filter selector of that endpoint): a check that
  turns critical or warning appears, one that recovers or is deleted while failing
  disappears, and either names the service it belongs to (a node check, ``serfHealth`` or
  node maintenance, names every service on that node). A passing check coming or going
  changes no health (health is the worst check; no checks is healthy), so the watch reads
  only what can matter: a check change costs a few hundred bytes, not every check of every
  service (11,000 checks, 3 MB at 1,000 services x 10). Its index is the checks table's, so
  it still wakes at every check write, and says at which index checks were written;
- ``/v1/catalog/nodes`` — node addresses: a change names every service on that node.

Their differences say which services changed; only those are re-read with non-blocking
``/v1/health/service/<name>`` requests through a bounded pool (``max_concurrent_queries``
covers the watches and the pool together). A catalog change that neither a name, a tag nor a
failing check explains (an instance with passing checks registered or deregistered, an
instance without checks, a new address, a moved port) is attributed by a **census**: one
non-blocking ``/v1/health/state/any`` read of every check, diffed against the previous census
— checks that appeared or disappeared, and checks written in this catalog round (Consul
writes a registration's service and checks at one Raft index, their ``ModifyIndex``), name
their services. Only when the census names none (an address change, an instance without
checks) is every service re-read. Every service is also re-read after a reconnect, an index
reset and every ``resync_interval`` (the safety net). docs/consul.md has the reasoning and the
measurements.

Mesh endpoints cost no extra request: a Connect sidecar is a catalog service of its own
(``api-sidecar-proxy``), so the same watches see it come, go and change health (its checks,
alias check of the instance it fronts included, name it), and its ``/v1/health/service/<name>``
read says ``Kind: connect-proxy`` and ``Proxy.DestinationServiceName``. Such a read yields no
service of its own (nor does a gateway's): its instances become the ``mesh_endpoints`` of
the destination — the instances ``/v1/health/connect/<destination>`` would list. The
service filter applies to the sidecars' own names and tags (a sidecar_service inherits its
parent's tags); a sidecar of a service that is not served is dropped.

Failure rules: the last good data is kept; a service is emptied or removed only by a
successful read saying so; one log line per state change; ``ready`` once the first complete
sync is published.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from xds_server.consul import Backoff, ConsulError, TokenBucket
from xds_server.model.inventory import Endpoint, Inventory, Service
from xds_server.sources.base import Publish, SourceStatus, StatusTracker
from xds_server.sources.consul_api import ConsulApi
from xds_server.sources.consul_mapping import (
    CONSUL_METADATA_NAMESPACE,
    HealthRead,
    MappingOptions,
    merge_datacenters,
    select_services,
    split_health,
)
from xds_server.sources.consul_settings import WatcherSettings

log = logging.getLogger(__name__)

#: How long the catalog watch waits for the checks watch to reach its index before deciding
#: that a change is unexplained (both return at once for a registration with checks).
ATTRIBUTION_GRACE = 0.25

_T = TypeVar("_T")
CheckKey = tuple[str, str]  # (node, check id)
CheckState = tuple[str, str]  # (status, service name)
CensusEntry = tuple[str, int]  # (service name, ModifyIndex)


@dataclass(eq=False)
class _Datacenter:
    """What the watcher knows of one datacenter; mutated only by the event loop."""

    name: str | None  # None: the agent's own datacenter
    options: MappingOptions
    catalog: dict[str, tuple[str, ...]] | None = None  # selected service → tags
    catalog_index: int = 0
    #: The checks that are not passing (what the checks watch reads).
    checks: dict[CheckKey, CheckState] | None = None
    checks_index: int = 0
    #: Every check, as the last census read them (None: none taken since the catalog was
    #: last read afresh).
    census: dict[CheckKey, CensusEntry] | None = None
    nodes: dict[str, tuple[str, tuple[tuple[str, str], ...]]] | None = None  # node → addresses
    checks_progress: asyncio.Event = field(default_factory=asyncio.Event)
    #: Indexes at which the checks watch saw a change (recent ones only).
    explained: deque[int] = field(default_factory=lambda: deque(maxlen=256))
    endpoints: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    #: Names whose instances are all proxies or gateways: read, but never services.
    proxies: set[str] = field(default_factory=set)
    #: Mesh endpoints each name's read found, by destination; and who feeds a destination.
    mesh_of: dict[str, Mapping[str, tuple[Endpoint, ...]]] = field(default_factory=dict)
    mesh_sources: dict[str, set[str]] = field(default_factory=dict)  # destination → names
    nodes_of: dict[str, frozenset[str]] = field(default_factory=dict)  # service → its nodes
    services_on: dict[str, set[str]] = field(default_factory=dict)  # node → services
    dirty: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)
    #: Selected services never read yet (the first complete sync waits for them).
    unread: set[str] = field(default_factory=set)
    synced: bool = False

    @property
    def label(self) -> str:
        return self.name or "local"

    def checks_moved(self) -> None:
        event, self.checks_progress = self.checks_progress, asyncio.Event()
        event.set()

    def set_read(self, name: str, read: HealthRead) -> set[str]:
        """Store what reading ``name`` found; return the services whose data changed (the
        name itself, and the destinations of mesh endpoints that came, went or moved)."""
        mesh_endpoints = [e for group in read.mesh.values() for e in group]
        nodes = frozenset(_node_of(e) for e in (*read.endpoints, *mesh_endpoints))
        old_nodes = self.nodes_of.get(name, frozenset())
        for node in old_nodes - nodes:
            self.services_on.get(node, set()).discard(name)
        for node in nodes - old_nodes:
            self.services_on.setdefault(node, set()).add(name)
        self.nodes_of[name] = nodes
        self.unread.discard(name)
        changed = set()
        was_proxy = name in self.proxies
        if read.proxy_only is not None and read.proxy_only != was_proxy:
            (self.proxies.add if read.proxy_only else self.proxies.discard)(name)
            changed.add(name)
        if self.endpoints.get(name) != read.endpoints:
            changed.add(name)
        self.endpoints[name] = read.endpoints
        old_mesh = self.mesh_of.pop(name, {})
        if read.mesh:
            self.mesh_of[name] = read.mesh
        for destination in old_mesh.keys() | read.mesh.keys():
            if destination not in read.mesh:
                sources = self.mesh_sources[destination]
                sources.discard(name)
                if not sources:
                    del self.mesh_sources[destination]
            else:
                self.mesh_sources.setdefault(destination, set()).add(name)
            if old_mesh.get(destination) != read.mesh.get(destination):
                changed.add(destination)
        return changed

    def forget(self, name: str) -> set[str]:
        changed = self.set_read(name, HealthRead()) | {name}
        del self.endpoints[name]
        self.proxies.discard(name)
        self.nodes_of.pop(name, None)
        self.dirty.discard(name)
        self.unread.discard(name)
        return changed

    def is_service(self, name: str) -> bool:
        return name in self.endpoints and name not in self.proxies

    def mesh_endpoints(self, destination: str) -> Iterable[Endpoint]:
        for source in self.mesh_sources.get(destination, ()):
            yield from self.mesh_of[source][destination]


class ConsulWatcher:
    """``InventorySource`` for Consul (see the module docstring for the strategy)."""

    def __init__(
        self,
        settings: WatcherSettings,
        *,
        api_factory: Callable[[WatcherSettings], ConsulApi] = ConsulApi,
    ) -> None:
        self._settings = settings
        self._api_factory = api_factory
        self._api: ConsulApi | None = None
        self._status = StatusTracker(log, "consul")
        names: Iterable[str | None] = settings.datacenters or (None,)
        self._dcs = [
            _Datacenter(name, settings.mapping_options(0 if i == 0 else 1, name))
            for i, name in enumerate(names)
        ]
        self._filter = settings.service_filter
        self._services: dict[str, Service] = {}
        self._changed: set[str] = set()
        self._published: Inventory | None = None
        self._wake = asyncio.Event()
        self._read_backoff = Backoff(settings.backoff_base, settings.backoff_max)
        self._started = 0.0
        #: Counters for tests and metrics.
        self.full_resyncs = 0
        self.service_reads = 0
        self.publishes = 0
        self.census_reads = 0

    @property
    def status(self) -> SourceStatus:
        return self._status.status

    @property
    def api(self) -> ConsulApi | None:
        """The client while running (its ``max_in_flight`` shows the bound is kept)."""
        return self._api

    async def run(self, publish: Publish) -> None:
        log.info("consul: watching %s", self._settings.describe())
        self._started = time.monotonic()
        async with self._api_factory(self._settings) as api:
            self._api = api
            try:
                async with asyncio.TaskGroup() as tasks:
                    for dc in self._dcs:
                        watches = (
                            self._watch(dc, "catalog", api.catalog_services, self._apply_catalog),
                            self._watch(dc, "checks", api.checks_not_passing, self._apply_checks),
                            self._watch(dc, "nodes", api.catalog_nodes, self._apply_nodes),
                        )
                        for watch in watches:
                            tasks.create_task(watch)
                    tasks.create_task(self._reader(tasks, publish), name="consul reader")
                    if self._settings.resync_interval > 0:
                        tasks.create_task(self._periodic_resync(), name="consul resync")
            finally:
                self._api = None

    # -- the three watches per datacenter -----------------------------------------------------

    async def _watch(
        self,
        dc: _Datacenter,
        what: str,
        fetch: Callable[[str | None, int], Awaitable[tuple[int, _T]]],
        apply: Callable[[_Datacenter, _T, int, bool], Awaitable[None]],
    ) -> None:
        """A blocking-query loop honouring Consul's rules (features/blocking.mdx).

        Paced by a token bucket (no sleep in the happy path); errors back off with jitter and
        restart at index 0, as does an index that goes backwards — the catalog watch then
        re-reads everything. An index below 1 is used as 1 so the next call blocks.
        """
        channel = f"{what} {dc.label}"
        bucket = TokenBucket(self._settings.rate, self._settings.burst)
        backoff = Backoff(self._settings.backoff_base, self._settings.backoff_max)
        index = 0  # what we send: 0 for a fresh, non-blocking read
        seen = 0  # the last X-Consul-Index Consul returned (``index`` may be its sanitised 1)
        while True:
            await bucket.acquire()
            try:
                new_index, data = await fetch(dc.name, index)
            except ConsulError as exc:
                self._status.fail(channel, exc.kind, exc.message)
                index = seen = 0
                await backoff.sleep()
                continue
            backoff.reset()
            self._status.ok(channel)
            if new_index < seen:
                log.info(
                    "consul %s: %s index went backwards (%d → %d): starting over",
                    dc.label,
                    what,
                    seen,
                    new_index,
                )
                if what == "checks":
                    dc.explained.clear()
                    dc.checks_index = 0
                index = seen = 0
                continue
            await apply(dc, data, new_index, index == 0)
            seen = new_index
            index = max(new_index, 1)

    async def _apply_catalog(
        self, dc: _Datacenter, catalog: dict[str, list[str]], new_index: int, fresh: bool
    ) -> None:
        selected = select_services(catalog, self._filter)
        old = dc.catalog or {}
        old_index, dc.catalog, dc.catalog_index = dc.catalog_index, selected, new_index
        for name in old.keys() - selected.keys():
            self._changed |= dc.forget(name)
            self._status.ok(_read_channel(dc, name))  # a read failing for it no longer matters
        dc.unread |= selected.keys() - dc.endpoints.keys()
        dirty = {n for n, tags in selected.items() if old.get(n) != tags}
        if fresh:  # first read, reconnect or index reset: re-read everything
            dc.dirty |= selected.keys()
            self.full_resyncs += 1
            self._wake.set()
            # The reference the next unexplained change is diffed against (the reads above
            # queue behind it: it takes a read slot first).
            dc.census = None
            await self._take_census(dc)
            return
        if (
            not dirty
            and new_index > old_index
            and len(old) == len(selected)
            and not await self._explained_by_checks(dc, new_index)
        ):
            named = await self._attribute_by_census(dc, old_index, new_index)
            if named is None:
                log.debug("consul %s: index %d unexplained: re-reading all", dc.label, new_index)
                dirty = set(selected)
                self.full_resyncs += 1
            else:
                dirty = named & selected.keys()
        dc.dirty |= dirty
        self._wake.set()

    async def _take_census(self, dc: _Datacenter) -> dict[CheckKey, CensusEntry] | None:
        """Read every check of ``dc`` (non-blocking, through the read pool); the previous
        census is returned and replaced. A failure leaves no census (the next unexplained
        change is then a full re-read, as it would have been without one)."""
        assert self._api is not None
        previous, dc.census = dc.census, None
        try:
            _, checks = await self._api.health_state(dc.name)
        except ConsulError as exc:
            log.debug("consul %s: census failed: %s", dc.label, exc.message)
            return previous
        self.census_reads += 1
        dc.census = census_of(checks)
        return previous

    async def _attribute_by_census(
        self, dc: _Datacenter, old_index: int, new_index: int
    ) -> set[str] | None:
        """The services a catalog change between the two indexes touched, by the checks that
        came, went or were written (``ModifyIndex``) in between; None when it cannot say."""
        previous = await self._take_census(dc)
        if previous is None or dc.census is None:
            return None
        named = census_changes(dc.services_on, previous, dc.census, old_index, new_index)
        if not named:
            return None
        log.debug("consul %s: index %d attributed to %s", dc.label, new_index, sorted(named))
        return named

    async def _explained_by_checks(self, dc: _Datacenter, index: int) -> bool:
        """Did the checks watch see a change at exactly ``index``? Waits a little for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ATTRIBUTION_GRACE
        while dc.checks_index < index and index not in dc.explained:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(dc.checks_progress.wait(), remaining)
            except TimeoutError:
                break
        return index in dc.explained

    async def _apply_checks(
        self, dc: _Datacenter, checks: list[dict[str, Any]], new_index: int, fresh: bool
    ) -> None:
        current: dict[CheckKey, CheckState] = {}
        for check in checks:
            key = (str(check.get("Node") or ""), str(check.get("CheckID") or ""))
            current[key] = (str(check.get("Status") or ""), str(check.get("ServiceName") or ""))
        previous, dc.checks = dc.checks, current
        # After a reconnect the diff against the old checks still says what changed meanwhile.
        if previous is not None:
            affected = _affected_by_checks(dc, previous, current)
            if affected:
                dc.explained.append(new_index)
                self._mark(dc, affected)
        dc.checks_index = new_index
        dc.checks_moved()

    async def _apply_nodes(
        self, dc: _Datacenter, nodes: list[dict[str, Any]], new_index: int, fresh: bool
    ) -> None:
        current = {str(n.get("Node") or ""): _node_addresses(n) for n in nodes}
        previous, dc.nodes = dc.nodes, current
        if previous is not None:
            moved = {
                n for n in previous.keys() | current.keys() if previous.get(n) != current.get(n)
            }
            self._mark(dc, {s for n in moved for s in dc.services_on.get(n, ())})

    def _mark(self, dc: _Datacenter, names: set[str]) -> None:
        if dc.catalog is not None and (names := names & dc.catalog.keys()):
            dc.dirty |= names
            self._wake.set()

    # -- reading services through the bounded pool --------------------------------------------

    async def _reader(self, tasks: asyncio.TaskGroup, publish: Publish) -> None:
        """Starts a batch of reads for whatever became dirty; publishes what changed."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            for dc in self._dcs:
                names = dc.dirty - dc.in_flight
                if names:
                    dc.dirty -= names
                    dc.in_flight |= names
                    tasks.create_task(self._read_batch(dc, names, publish))
            self._publish_if_changed(publish)

    async def _read_batch(self, dc: _Datacenter, names: set[str], publish: Publish) -> None:
        ordered = sorted(names)
        try:
            results = await asyncio.gather(*(self._read_one(dc, n, publish) for n in ordered))
        finally:
            dc.in_flight -= names
        # Each service is its own status channel: one that keeps failing while others are
        # read fine is one failure, not a failing/recovered flip-flop at every batch.
        failed = set()
        for name, error in zip(ordered, results, strict=True):
            if error is None:
                self._status.ok(_read_channel(dc, name))
            elif dc.catalog is not None and name in dc.catalog:
                self._status.fail(_read_channel(dc, name), error.kind, error.message)
                failed.add(name)
        if not failed:
            self._read_backoff.reset()
        self._publish_if_changed(publish)
        if failed:
            await self._read_backoff.sleep()
            if dc.catalog is not None:
                dc.dirty |= failed & dc.catalog.keys()
        if dc.dirty:
            self._wake.set()

    async def _read_one(self, dc: _Datacenter, name: str, publish: Publish) -> ConsulError | None:
        assert self._api is not None
        try:
            _, entries = await self._api.health_service(name, dc.name)
        except ConsulError as exc:
            return exc
        self.service_reads += 1
        if dc.catalog is None or name not in dc.catalog:
            return None  # removed while we were reading
        if changed := dc.set_read(name, split_health(entries, dc.options)):
            self._changed |= changed
            # At once, not at the end of the batch: during a full re-read of thousands of
            # services, the one that changed should not wait for all the others.
            self._publish_if_changed(publish)
        return None

    async def _periodic_resync(self) -> None:
        interval = self._settings.resync_interval
        while True:
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))
            log.debug("consul: periodic full resync")
            self.resync()

    def resync(self) -> None:
        """Re-read every known service (the safety net; also for operators and tests)."""
        for dc in self._dcs:
            if dc.catalog is not None:
                dc.dirty |= dc.catalog.keys()
        self.full_resyncs += 1
        self._wake.set()

    # -- publishing -----------------------------------------------------------------------------

    def _publish_if_changed(self, publish: Publish) -> None:
        if self._published is not None and not self._changed:
            return
        for dc in self._dcs:
            if not dc.synced:
                if dc.catalog is None or dc.unread:
                    return
                dc.synced = True
        changed = False
        for name in self._changed:
            groups = [dc.endpoints[name] for dc in self._dcs if dc.is_service(name)]
            old = self._services.get(name)
            if not groups:
                changed |= self._services.pop(name, None) is not None
                continue
            mesh = [e for dc in self._dcs for e in dc.mesh_endpoints(name)]
            service = merge_datacenters(name, groups, mesh)
            if service != old:
                self._services[name] = service
                changed = True
        self._changed.clear()
        if not changed and self._published is not None:
            return
        inventory = Inventory.of(self._services, synced=True)
        first = self._published is None
        self._published = inventory
        self.publishes += 1
        self._status.mark_ready()
        if first:
            log.info(
                "consul: initial sync: %d services, %d endpoints, %d mesh endpoints in %.2fs",
                len(self._services),
                sum(len(s.endpoints) for s in self._services.values()),
                sum(len(s.mesh_endpoints) for s in self._services.values()),
                time.monotonic() - self._started,
            )
        publish(inventory)


def _read_channel(dc: _Datacenter, name: str) -> str:
    return f"read {dc.label} {name}"


def _node_of(endpoint: Endpoint) -> str:
    consul = endpoint.metadata.get(CONSUL_METADATA_NAMESPACE)
    return str(consul.get("node", "")) if isinstance(consul, Mapping) else ""


def _node_addresses(node: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    tagged = node.get("TaggedAddresses")
    pairs = sorted((str(k), str(v)) for k, v in tagged.items()) if isinstance(tagged, dict) else []
    return str(node.get("Address") or ""), tuple(pairs)


def census_of(checks: Iterable[Mapping[str, Any]]) -> dict[CheckKey, CensusEntry]:
    """``/v1/health/state/any`` → (node, check ID) → (service name, ``ModifyIndex``)."""
    census: dict[CheckKey, CensusEntry] = {}
    for check in checks:
        key = (str(check.get("Node") or ""), str(check.get("CheckID") or ""))
        modify = check.get("ModifyIndex")
        index = modify if isinstance(modify, int) and not isinstance(modify, bool) else 0
        census[key] = (str(check.get("ServiceName") or ""), index)
    return census


def census_changes(
    services_on: Mapping[str, set[str]],
    previous: Mapping[CheckKey, CensusEntry],
    current: Mapping[CheckKey, CensusEntry],
    after: int,
    upto: int,
) -> set[str]:
    """Services owning a check that appeared or disappeared between two censuses, or was
    written at an index in ``(after, upto]``; a node check names every service on its node
    (as we last read it, or as the census's checks name it). Pure."""
    came_or_went = previous.keys() ^ current.keys()
    changed = [(key, (current.get(key) or previous[key])[0]) for key in came_or_went]
    changed += [(key, svc) for key, (svc, index) in current.items() if after < index <= upto]
    owners = {service for _, service in changed if service}
    nodes = {node for (node, _), service in changed if not service}
    if nodes:
        for node in nodes:
            owners |= services_on.get(node, set())
        owners |= {service for (node, _), (service, _) in current.items() if node in nodes}
        owners.discard("")
    return owners


def _affected_by_checks(
    dc: _Datacenter, previous: Mapping[CheckKey, CheckState], current: Mapping[CheckKey, CheckState]
) -> set[str]:
    """Services whose health may differ: owners of changed checks; for a node check, every
    service on the node (as we last read it, or as its checks name it)."""
    affected: set[str] = set()
    changed_nodes: set[str] = set()
    for key in previous.keys() | current.keys():
        before, after = previous.get(key), current.get(key)
        if before == after:
            continue
        for state in (before, after):
            if state is None:
                continue
            if state[1]:
                affected.add(state[1])
            else:
                changed_nodes.add(key[0])
    if changed_nodes:
        for node in changed_nodes:
            affected |= dc.services_on.get(node, set())
        for (node, _), (_, service) in current.items():
            if service and node in changed_nodes:
                affected.add(service)
    return affected
