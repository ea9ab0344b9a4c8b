"""What the admin API needs from the rest of the process, injected by the wiring.

The admin package may not import ``translate``, ``sources`` or ``server``; what it needs from
them arrives here as plain callables, so the API can be tested with fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.requests import Request

from xds_server.admin.mesh_status import MeshRootRotation, MeshStatusSource
from xds_server.admin.routes.health import ReadinessCheck
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.model import Config, Inventory
from xds_server.model.config_parser import ConfigParser
from xds_server.status import EventLog, ProxyRegistry
from xds_server.status.fleet import FleetView
from xds_server.store import ConfigStore

#: ``(before, after) -> what would change in Envoy``: a JSON object (e.g. resources added,
#: changed and removed per type URL). Called for dry runs only.
Preview = Callable[[Config, Config], dict[str, Any]]
#: Who makes a request (recorded in history). Authentication comes later.
Actor = Callable[[Request], str]

#: The default request body limit: 1 MiB.
MAX_BODY_BYTES = 1 << 20


def no_preview(before: Config, after: Config) -> dict[str, Any]:
    """A preview that knows nothing about Envoy (when no translator is wired in)."""
    return {}


def anonymous(request: Request) -> str:
    return "anonymous"


@dataclass(frozen=True, slots=True)
class AdminContext:
    store: ConfigStore
    #: The current inventory, for "service has no instances" warnings.
    inventory: Callable[[], Inventory]
    preview: Preview = no_preview
    readiness: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    actor: Actor = anonymous
    max_body_bytes: int = MAX_BODY_BYTES
    #: The proxies' status and the snapshots they were sent (read only), for /v1/proxies.
    proxies: ProxyRegistry = field(default_factory=ProxyRegistry)
    cache: SnapshotCache = field(default_factory=SnapshotCache)
    #: What /v1/events streams; None: no feed is wired in (every stream ends at once).
    events: EventLog | None = None
    #: What /metrics exposes; the admin API adds its request metrics to it.
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    #: Parses stored documents, remembering them; shared with the snapshot pipeline so that
    #: a document the API parsed is not parsed again for Envoy.
    parser: ConfigParser = field(default_factory=ConfigParser)
    #: The mesh CA's state for ``GET /v1/mesh`` (CA subject, fingerprint and expiry, issued
    #: identities with serial and expiry; never a key); None: no status is shown.
    mesh_status: MeshStatusSource | None = None
    #: Starts a rotation of the built-in mesh CA root (``POST /v1/mesh/rotate-root``); None:
    #: no mesh CA runs (the route answers 409).
    mesh_rotate_root: MeshRootRotation | None = None
    #: The other replicas' proxies for /v1/proxies (``--store consul-kv``); None: this
    #: replica alone.
    fleet: FleetView | None = None
