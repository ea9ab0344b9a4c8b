"""Settings of ``xds-server serve``: flags mirrored by ``XDS_SERVER_*`` environment variables.

The command line (``cli/serve.py``) hands over the flags it parsed; :func:`settings_from`
completes them from the environment and checks them. A flag wins over its variable, the
variable over the default. Nothing is read at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from xds_server.settings.security import SecuritySettings, security_from

#: The SQLite database of ``--store sqlite:PATH`` when no path is given.
DEFAULT_DATABASE = "xds-server.db"
DEFAULT_STORE = f"sqlite:{DEFAULT_DATABASE}"
#: Prefix of the variable that mirrors each flag (``--ads-listen``: ``XDS_SERVER_ADS_LISTEN``).
ENV_PREFIX = "XDS_SERVER_"


_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_LEVEL_ERROR = "--log-level: expected debug, info, warning or error: {!r}"
_LOG_FORMATS = ("json", "text")
_LOG_FORMAT_ERROR = "--log-format: expected json or text, got {!r}"


class SettingsError(ValueError):
    """A flag or variable has a value we cannot use."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @staticmethod
    def parse(text: str, what: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise SettingsError(f"{what}: expected HOST:PORT, got {text!r}")
        host = host.strip("[]") or "0.0.0.0"
        return Address(host, int(port))


@dataclass(frozen=True, slots=True)
class Settings:
    ads_listen: Address = Address("127.0.0.1", 18000)
    admin_listen: Address = Address("127.0.0.1", 8080)
    #: ``static:PATH`` (``static:`` alone is an empty registry) or ``consul``.
    registry: str = "static:"
    #: ``sqlite:PATH`` or ``consul-kv:PREFIX``.
    store: str = DEFAULT_STORE
    log_level: str = "info"
    log_format: str = "json"
    #: Quiet time that ends a burst of changes, and the longest a change may wait under
    #: constant churn, before a new snapshot is built.
    debounce: float = 0.1
    max_delay: float = 1.0
    #: Consul address and ACL token over Consul's own variables (``CONSUL_HTTP_ADDR`` …),
    #: for the registry and the store alike; None: the variable's.
    consul_addr: str | None = None
    consul_token: str | None = None
    #: Datacenters the Consul registry watches, local first; empty: the agent's.
    consul_datacenters: tuple[str, ...] = ()
    #: With ``--store consul-kv``: the TTL of the Consul session under which this replica
    #: publishes its proxies (Consul drops them between 1 and 2 TTLs after a crash; Consul
    #: accepts 10s to 24h), how often it publishes at most, and its name in the fleet
    #: (None: ``HOST:ADS-PORT``).
    fleet_ttl: float = 10.0
    fleet_interval: float = 1.0
    replica_id: str | None = None
    #: Admin API tokens and TLS on the ADS port (``security``).
    security: SecuritySettings = field(default_factory=SecuritySettings)

    @property
    def registry_kind(self) -> str:
        return _kind(self.registry)

    @property
    def registry_path(self) -> str:
        return _target(self.registry)

    @property
    def store_kind(self) -> str:
        return _kind(self.store)

    @property
    def store_target(self) -> str:
        return _target(self.store)


def _kind(spec: str) -> str:
    """``sqlite:PATH`` → ``sqlite``."""
    return spec.split(":", 1)[0]


def _target(spec: str) -> str:
    """``sqlite:PATH`` → ``PATH`` (empty without a colon)."""
    return spec.split(":", 1)[1] if ":" in spec else ""


def check_store(store: str) -> str:
    """``store`` if it is ``sqlite:PATH`` or ``consul-kv:PREFIX``; else a ``SettingsError``."""
    if _kind(store) not in {"sqlite", "consul-kv"} or ":" not in store:
        raise SettingsError(f"--store: expected sqlite:PATH or consul-kv:PREFIX, got {store!r}")
    return store


def _duration(text: str, what: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for suffix in ("ms", "s", "m"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * units[suffix]
    raise SettingsError(f"{what}: expected a duration such as 100ms, 1s or 1m, got {text!r}")


def _choice(value: str, allowed: tuple[str, ...], message: str) -> str:
    lowered = value.lower()
    if lowered not in allowed:
        raise SettingsError(message.format(lowered))
    return lowered


def _registry(registry: str) -> str:
    if _kind(registry) not in {"static", "consul"}:
        raise SettingsError(f"--registry: expected static:PATH or consul, got {registry!r}")
    return registry


def _address(text: str | None, what: str, default: Address) -> Address:
    return Address.parse(text, what) if text else default


def _seconds(text: str | None, what: str, default: float) -> float:
    return _duration(text, what) if text else default


def settings_from(
    flags: Mapping[str, object], environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from the parsed flags (by option name, None: not given) and ``environ``."""
    environ = os.environ if environ is None else environ

    def pick(flag: str) -> str | None:
        value = flags.get(flag)
        if value is None:
            value = environ.get(ENV_PREFIX + flag.upper())
        return None if value is None else str(value)

    base = Settings()
    registry = _registry(pick("registry") or base.registry)
    store = check_store(pick("store") or base.store)
    log_level = _choice(pick("log_level") or base.log_level, _LOG_LEVELS, _LOG_LEVEL_ERROR)
    log_format = _choice(pick("log_format") or base.log_format, _LOG_FORMATS, _LOG_FORMAT_ERROR)
    try:
        security = security_from(pick)
    except ValueError as error:
        raise SettingsError(str(error)) from error
    datacenters = pick("consul_datacenters") or ""
    return Settings(
        ads_listen=_address(pick("ads_listen"), "--ads-listen", base.ads_listen),
        admin_listen=_address(pick("admin_listen"), "--admin-listen", base.admin_listen),
        registry=registry,
        store=store,
        log_level=log_level,
        log_format=log_format,
        debounce=_seconds(pick("debounce"), "--debounce", base.debounce),
        max_delay=_seconds(pick("max_delay"), "--max-delay", base.max_delay),
        consul_addr=pick("consul_addr") or None,
        consul_token=pick("consul_token") or None,
        consul_datacenters=tuple(dc.strip() for dc in datacenters.split(",") if dc.strip()),
        fleet_ttl=_seconds(pick("fleet_ttl"), "--fleet-ttl", base.fleet_ttl),
        fleet_interval=_seconds(pick("fleet_interval"), "fleet interval", base.fleet_interval),
        replica_id=pick("replica_id") or None,
        security=security,
    )
