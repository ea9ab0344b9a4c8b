"""Wiring: build every part from settings and run them in one asyncio loop.

Sources publish inventories and the store publishes config states into the snapshot
pipeline; the pipeline translates and fills the cache; the gRPC server and the admin API
read from there. Nothing else knows how the parts are connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from xds_server.admin.app import create_admin_app
from xds_server.admin.context import AdminContext
from xds_server.admin.middleware.auth import TokenFile, install_auth, request_actor
from xds_server.admin.server import AdminServer
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.consul import ConsulKv, ConsulSettings, KvEntry
from xds_server.consul.kv import PrefixFollower
from xds_server.consul.sessions import EphemeralKeys
from xds_server.mesh import MeshAuthority, StoreVault
from xds_server.model.config import Config
from xds_server.model.config_parser import ConfigParser
from xds_server.model.inventory import Inventory
from xds_server.model.mesh_checks import edge_callers
from xds_server.model.problems import InvalidDocuments
from xds_server.model.workload import Identities
from xds_server.observability.hub import Observability
from xds_server.observability.metrics import MeshFigures
from xds_server.pipeline import BuildResult, SnapshotPipeline, preview_for
from xds_server.runtime import MemoryReleaser, malloc_trim
from xds_server.server.grpc_server import start_ads_server
from xds_server.server.tls import AdsTls
from xds_server.settings import (
    DEFAULT_DATABASE,
    Address,
    Settings,
    SettingsError,
    ads_exposure_warning,
    check_admin_exposure,
)
from xds_server.sources.base import InventorySource, SourceStatus
from xds_server.sources.consul import ConsulWatcher
from xds_server.sources.consul_settings import WatcherSettings
from xds_server.sources.empty import EmptyRegistry
from xds_server.sources.static import StaticRegistry
from xds_server.status import ProxyEvent, ProxyEventKind, ProxyRegistry
from xds_server.status.fleet import FleetSummaries, FleetView, Replica
from xds_server.store import ConfigState, ConfigStore, SqliteStore, StoreError
from xds_server.store.consul_kv import ConsulKvSettings, ConsulKvStore
from xds_server.translate import translate

log = logging.getLogger("xds_server")

#: How long SIGTERM lets short calls (Fetch) finish; xDS streams never end by themselves,
#: so they are closed after it and Envoy reconnects (to another replica, if any).
SHUTDOWN_GRACE = 1.0


def consul_settings(settings: Settings) -> ConsulSettings:
    """How to reach Consul: its own variables, under ``--consul-addr``/``--consul-token``."""
    return ConsulSettings.from_env(
        os.environ, address=settings.consul_addr, token=settings.consul_token
    )


def build_source(settings: Settings) -> InventorySource:
    if settings.registry_kind == "consul":
        try:
            watch = WatcherSettings(consul_settings(settings), settings.consul_datacenters)
            return ConsulWatcher(watch)
        except ValueError as error:
            raise SettingsError(f"--registry consul: {error}") from error
    if settings.registry_path:
        return StaticRegistry(settings.registry_path)
    return EmptyRegistry()


def build_store(settings: Settings) -> ConfigStore:
    if settings.store_kind == "sqlite":
        return SqliteStore(settings.store_target or DEFAULT_DATABASE)
    if settings.store_kind == "consul-kv":
        return build_consul_kv_store(settings)
    raise SettingsError(f"--store {settings.store}: not supported by this version")


def build_consul_kv_store(settings: Settings) -> ConsulKvStore:
    """``--store consul-kv:PREFIX``, reaching Consul as the Consul registry does."""
    try:
        return ConsulKvStore(settings.store_target, ConsulKvSettings(consul_settings(settings)))
    except ValueError as error:
        raise SettingsError(f"--store {settings.store}: {error}") from error


def fleet_prefix(settings: Settings) -> str:
    """``--store consul-kv:PREFIX``: the fleet's tree, ``PREFIX-fleet/`` (beside the config,
    so the store's reads of ``PREFIX/`` stay config only; ``key_prefix "PREFIX"`` covers both)."""
    return settings.store_target.strip().strip("/") + "-fleet/"


def live_values(entries: list[KvEntry]) -> dict[str, bytes]:
    """The fleet keys a live session holds (a key without one is left over, not a replica)."""
    return {e.key: e.value for e in entries if e.session and e.value is not None}


def build_admin_tokens(settings: Settings) -> TokenFile | None:
    """The admin API's tokens (``--admin-tokens``); refuses an exposed API without them."""
    security = settings.security
    try:
        check_admin_exposure(settings.admin_listen.host, security)
        return TokenFile(security.admin_tokens) if security.admin_tokens else None
    except ValueError as error:
        raise SettingsError(str(error)) from error


def build_ads_tls(settings: Settings) -> AdsTls | None:
    """TLS of the ADS port (``--ads-tls-cert`` …), its files checked now."""
    security = settings.security
    if not security.ads_tls_cert or not security.ads_tls_key:
        return None
    try:
        tls = AdsTls(
            security.ads_tls_cert,
            security.ads_tls_key,
            security.ads_client_ca,
            security.ads_verify_node,
        )
        tls.check()
    except ValueError as error:
        raise SettingsError(str(error)) from error
    return tls


def source_name(source: InventorySource) -> str:
    """The registry's name in metrics and events: ``consul``, ``static`` or ``none``."""
    if isinstance(source, ConsulWatcher):
        return "consul"
    if isinstance(source, StaticRegistry):
        return "static"
    if isinstance(source, EmptyRegistry):
        return "none"
    return type(source).__name__.lower()


def config_of(state: ConfigState, parser: ConfigParser | None = None) -> Config:
    """The operator config of a store state (documents were validated when written).

    With ``parser``, only the documents that changed since its last call are parsed again.
    """
    return (parser or ConfigParser()).config_of(
        (doc.kind, doc.name, doc.spec, doc.created_revision) for doc in state.documents.values()
    )


@dataclass
class XdsServerApp:
    """The running control plane. ``start`` binds everything; ``stop`` undoes it."""

    settings: Settings
    source: InventorySource | None = None
    store: ConfigStore | None = None
    cache: SnapshotCache = field(default_factory=SnapshotCache)
    registry: ProxyRegistry = field(default_factory=ProxyRegistry)
    ads_address: Address | None = None
    admin_address: Address | None = None
    pipeline: SnapshotPipeline | None = None
    #: Issues and renews the mesh's workload identities (made by ``start``).
    mesh: MeshAuthority | None = None
    #: Metrics, events and log lines (made by ``start``).
    observability: Observability | None = None
    #: The other replicas' proxies (``--store consul-kv`` only; made by ``start``).
    fleet: FleetView | None = None
    #: This replica's proxies in Consul, under its session (``--store consul-kv`` only).
    fleet_keys: EphemeralKeys | None = None
    _fleet_kv: ConsulKv | None = None
    _grpc: grpc.aio.Server | None = None
    _admin: AdminServer | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Parses each revision's documents for the pipeline, keeping what did not change.
    _parser: ConfigParser = field(default_factory=ConfigParser)
    #: Hands memory freed by dropped streams and replaced snapshots back to the OS.
    _memory: MemoryReleaser = field(default_factory=lambda: MemoryReleaser(malloc_trim()))

    async def start(self) -> None:
        settings = self.settings
        admin_tokens = build_admin_tokens(settings)
        ads_tls = build_ads_tls(settings)
        self.source = self.source or build_source(settings)
        self.store = self.store or build_store(settings)
        await self.store.open()
        observability = self.observability = Observability(
            self.cache,
            self.registry,
            source_name(self.source),
            self._source_status,
            self._store_revision,
            self._mesh_figures,
        )
        config = config_of(self.store.current(), self._parser)
        self.pipeline = SnapshotPipeline(
            self.cache,
            translate,
            Inventory(synced=False),
            config,
            debounce=settings.debounce,
            max_delay=settings.max_delay,
            on_build=self._on_build,
        )
        self.mesh = MeshAuthority(
            StoreVault(self.store), self._on_identities, on_event=observability.on_mesh_event
        )
        await self.mesh.set_config(config, edge_callers(config))
        self.registry.observe(self._on_proxy_event)
        self._memory.on_trim = observability.metrics.on_memory_trim
        self._spawn(self._memory.run(), "memory")
        self._spawn(self.source.run(self._on_inventory), "registry")
        self._spawn(observability.watch_source(), "registry status")
        self._spawn(self._follow_store(), "store")
        self._spawn(self.pipeline.run(), "pipeline")
        self._spawn(self.mesh.run(), "mesh CA")
        ads = settings.ads_listen
        self._grpc, ads_port = await start_ads_server(
            self.cache, self.registry, ads.host, ads.port, tls=ads_tls
        )
        self.ads_address = Address(ads.host, ads_port)
        exposure = ads_exposure_warning(ads.host, settings.security)
        if exposure is not None:
            log.warning(exposure)
        if settings.store_kind == "consul-kv":
            await self._start_fleet()
        await self._start_admin(self.store, observability, admin_tokens)
        log.info("started", extra={"ads": str(self.ads_address), "admin": str(self.admin_address)})

    async def _start_fleet(self) -> None:
        """Publish this replica's proxies and follow the others' (``status.fleet``)."""
        settings = self.settings
        assert self.ads_address is not None
        replica = Replica(
            settings.replica_id or f"{socket.gethostname()}:{self.ads_address.port}",
            str(self.ads_address),
        )
        fleet = self.fleet = FleetView(replica)
        kv = self._fleet_kv = ConsulKv(consul_settings(settings), max_connections=2)
        await kv.open()
        prefix = fleet_prefix(settings)
        keys = self.fleet_keys = EphemeralKeys(
            kv, f"{prefix}{replica.id}/", f"xds-server fleet {replica.id}", settings.fleet_ttl
        )
        summaries = FleetSummaries(self.registry, replica)
        follower = PrefixFollower(kv, prefix, lambda entries: fleet.update(live_values(entries)))
        self._spawn(keys.run(summaries.values, settings.fleet_interval), "fleet publisher")
        self._spawn(follower.run(), "fleet follower")

    async def _start_admin(
        self, store: ConfigStore, observability: Observability, tokens: TokenFile | None
    ) -> None:
        admin_app = create_admin_app(
            AdminContext(
                store=store,
                inventory=self._inventory,
                preview=preview_for(self._inventory, self._identities),
                readiness=self._readiness(),
                proxies=self.registry,
                cache=self.cache,
                events=observability.events,
                metrics=observability.metrics_registry,
                actor=request_actor,
                parser=self._parser,
                mesh_status=self.mesh.status if self.mesh is not None else None,
                mesh_rotate_root=self.mesh.rotate_root if self.mesh is not None else None,
                fleet=self.fleet,
            )
        )
        if tokens is not None:
            install_auth(admin_app, tokens)
        admin = self.settings.admin_listen
        self._admin = AdminServer(admin_app, admin.host, admin.port)
        await self._admin.start()
        self.admin_address = Address(admin.host, self._admin.port)

    def _readiness(self) -> dict[str, Callable[[], tuple[bool, str]]]:
        def store() -> tuple[bool, str]:
            return self.store is not None, "open"

        def registry() -> tuple[bool, str]:
            status = self.source.status if self.source else None
            if status is None or not status.ready:
                detail = status.last_error if status and status.last_error else "first sync"
                return False, f"waiting for the first inventory: {detail}"
            return True, status.last_error or "synced"

        def ads() -> tuple[bool, str]:
            return self._grpc is not None, f"listening on {self.ads_address}"

        return {"store": store, "registry": registry, "ads": ads}

    def _source_status(self) -> SourceStatus | None:
        return self.source.status if self.source is not None else None

    def _store_revision(self) -> int | None:
        try:
            return self.store.current().revision if self.store is not None else None
        except StoreError:  # closed
            return None

    def _inventory(self) -> Inventory:
        assert self.pipeline is not None
        return self.pipeline.inventory

    def _on_inventory(self, inventory: Inventory) -> None:
        assert self.pipeline is not None
        self.pipeline.set_inventory(inventory)
        if self.observability is not None:
            # Once the source has finished this step (it marks itself ready after
            # publishing), so the first sync is an event at once, not at the next poll.
            asyncio.get_running_loop().call_soon(self.observability.check_source)

    def _identities(self) -> Identities:
        assert self.pipeline is not None
        return self.pipeline.identities

    def _on_identities(self, identities: Identities) -> None:
        if self.pipeline is not None:
            self.pipeline.set_identities(identities)

    def _mesh_figures(self) -> MeshFigures | None:
        mesh = self.mesh
        if mesh is None or not mesh.identities.by_service:
            return None
        return MeshFigures(
            issued_total=mesh.issued_total,
            rotations_total=mesh.rotations_total,
            identities=len(mesh.identities.by_service),
            seconds_to_nearest_expiry=mesh.seconds_to_nearest_expiry(),
        )

    def _on_build(self, result: BuildResult) -> None:
        assert self.observability is not None
        self.observability.on_build(result)
        self._memory.poke()  # the previous snapshots go once every stream has moved on

    def _on_proxy_event(self, event: ProxyEvent) -> None:
        # A push ends with the proxies' ACKs; a dropped stream frees what it held.
        if event.kind in (ProxyEventKind.ACK, ProxyEventKind.DISCONNECT):
            self._memory.poke()

    async def _follow_store(self) -> None:
        assert self.store is not None and self.pipeline is not None
        async for state in self.store.watch():
            error: str | None = None
            try:
                config = config_of(state, self._parser)
                self.pipeline.set_config(config)
                if self.mesh is not None:
                    await self.mesh.set_config(config, edge_callers(config))
            except InvalidDocuments as invalid:
                error = str(invalid)
                log.error("stored config revision %d is invalid: %s", state.revision, invalid)
            if self.observability is not None:
                self.observability.on_revision(state.revision, len(state.documents), error)

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s task failed", name)

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def stop(self) -> None:
        if self.observability is not None:
            self.observability.close()  # ends /v1/events streams, which would hold the admin up
        if self._grpc is not None:
            await self._grpc.stop(SHUTDOWN_GRACE)
            self._grpc = None
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.fleet_keys is not None:
            await self.fleet_keys.close()  # Consul deletes this replica's proxies at once
        if self._fleet_kv is not None:
            await self._fleet_kv.close()
            self._fleet_kv = None
        if self.store is not None:
            await self.store.close()


def startup_line(app: XdsServerApp) -> str:
    """The one line tests and scripts read to learn the chosen ports."""
    return f"listening ads={app.ads_address} admin={app.admin_address}"


async def serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        app = XdsServerApp(settings)
        await app.start()
    except (OSError, SettingsError, StoreError) as error:
        log.error("cannot start: %s", error)
        print(f"xds-server: cannot start: {error}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            await app.stop()
        return 1
    line = startup_line(app)
    # Plain text on both streams, outside the JSON log, so any reader can parse it as is.
    print(line, flush=True)
    print(line, file=sys.stderr, flush=True)
    await stop.wait()
    log.info("shutting down")
    await app.stop()
    log.info("stopped")
    return 0
