"""Settings of the Consul source: which datacenters and services to watch, and how hard.

How to reach Consul (address, token, TLS, deadlines) is :class:`~xds_server.consul.ConsulSettings`,
read from Consul's own variables; this adds what only the watcher needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xds_server.consul import ConsulSettings
from xds_server.sources.consul_mapping import MappingOptions, ServiceFilter

#: An agent accepts 200 concurrent HTTP connections per client address by default.
CONSUL_CONNECTIONS_PER_CLIENT = 200

#: Blocking queries held open per datacenter: catalog services, checks, nodes.
WATCHES_PER_DATACENTER = 3


@dataclass(frozen=True, slots=True)
class WatcherSettings:
    """Everything the Consul watcher needs; durations in seconds."""

    #: How to reach Consul.
    consul: ConsulSettings = field(default_factory=ConsulSettings)
    #: Datacenters to watch, local one first (priority 0; the others priority 1).
    #: Empty: only the agent's own datacenter.
    datacenters: tuple[str, ...] = ()
    #: Prefer this tagged address (``wan``, ``lan_ipv4``…) over the default one.
    prefer_tagged_address: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    #: Concurrent HTTP requests (and connections) to Consul, blocking watches included
    #: (three per datacenter are reserved for them; reads share the rest).
    max_concurrent_queries: int = 64
    #: Token bucket per watch loop: sustained rounds per second, and burst.
    rate: float = 2.0
    burst: int = 2
    #: Back-off after errors: first delay and cap (with jitter).
    backoff_base: float = 0.5
    backoff_max: float = 1.0
    #: Re-read every service this often, as a safety net (0: never).
    resync_interval: float = 600.0

    def __post_init__(self) -> None:
        watches = self.blocking_slots
        if not watches < self.max_concurrent_queries <= CONSUL_CONNECTIONS_PER_CLIENT:
            raise ValueError(
                f"max_concurrent_queries must be above {watches} ({WATCHES_PER_DATACENTER} "
                f"blocking watches per datacenter) and at most {CONSUL_CONNECTIONS_PER_CLIENT} "
                f"(Consul's default per-client limit), not {self.max_concurrent_queries}"
            )
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        if self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise ValueError("need 0 < backoff_base <= backoff_max")
        if len(set(self.datacenters)) != len(self.datacenters):
            raise ValueError(f"datacenters listed twice: {self.datacenters}")

    @property
    def blocking_slots(self) -> int:
        """Requests reserved for the blocking watches; reads get the rest."""
        return WATCHES_PER_DATACENTER * max(len(self.datacenters), 1)

    @property
    def service_filter(self) -> ServiceFilter:
        return ServiceFilter(self.include, self.exclude, self.include_tags, self.exclude_tags)

    def mapping_options(self, priority: int, datacenter: str | None) -> MappingOptions:
        return MappingOptions(self.prefer_tagged_address, priority, datacenter or "")

    def describe(self) -> str:
        """For the start-up log line: never the token."""
        dcs = ",".join(self.datacenters) or "(agent's)"
        auth = "token" if self.consul.token else "anonymous"
        return (
            f"{self.consul.base_url} dc={dcs} {auth} max_concurrent={self.max_concurrent_queries}"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> WatcherSettings:
        """``ConsulSettings.from_env(env, ...)`` with the connection's overrides, and this
        class's fields from the others (a None value means "not given")."""
        own = {f.name for f in dataclasses.fields(cls)}
        mine: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in overrides.items()
            if k in own and v is not None
        }
        consul = ConsulSettings.from_env(
            env, **{k: v for k, v in overrides.items() if k not in own}
        )
        return cls(consul, **mine)
