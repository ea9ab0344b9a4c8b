"""Settings of ``xds-server serve``: flags mirrored by ``XDS_SERVER_*`` environment variables.

Parsed only when the command runs (never at import time). A flag wins over its variable,
the variable over the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from xds_server.security_settings import SecuritySettings, add_security_arguments, security_from


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
    store: str = "sqlite:xds-server.db"
    log_level: str = "info"
    log_format: str = "json"
    #: Quiet time that ends a burst of changes, and the longest a change may wait under
    #: constant churn, before a new snapshot is built.
    debounce: float = 0.1
    max_delay: float = 1.0
    #: Consul connection overrides (Consul's own CONSUL_* variables apply otherwise).
    consul: Mapping[str, str] = field(default_factory=dict)
    #: Admin API tokens and TLS on the ADS port (``security_settings``).
    security: SecuritySettings = field(default_factory=SecuritySettings)

    @property
    def registry_kind(self) -> str:
        return self.registry.split(":", 1)[0]

    @property
    def registry_path(self) -> str:
        return self.registry.split(":", 1)[1] if ":" in self.registry else ""

    @property
    def store_kind(self) -> str:
        return self.store.split(":", 1)[0]

    @property
    def store_target(self) -> str:
        return self.store.split(":", 1)[1] if ":" in self.store else ""


_ENV = "XDS_SERVER_"


def _duration(text: str, what: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for suffix in ("ms", "s", "m"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * units[suffix]
    raise SettingsError(f"{what}: expected a duration such as 100ms, 1s or 1m, got {text!r}")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    def env(name: str) -> str:
        return f"(env {_ENV}{name})"

    parser.add_argument("--ads-listen", help=f"ADS gRPC address {env('ADS_LISTEN')}")
    parser.add_argument("--admin-listen", help=f"REST admin address {env('ADMIN_LISTEN')}")
    parser.add_argument("--registry", help=f"static:PATH or consul {env('REGISTRY')}")
    parser.add_argument("--store", help=f"sqlite:PATH or consul-kv:PREFIX {env('STORE')}")
    parser.add_argument("--log-level", help=f"debug|info|warning|error {env('LOG_LEVEL')}")
    parser.add_argument("--log-format", help=f"json|text {env('LOG_FORMAT')}")
    parser.add_argument("--debounce", help=f"quiet time before a rebuild {env('DEBOUNCE')}")
    parser.add_argument("--max-delay", help=f"longest wait under churn {env('MAX_DELAY')}")
    parser.add_argument("--consul-addr", help="Consul address (default CONSUL_HTTP_ADDR)")
    parser.add_argument("--consul-token", help="Consul ACL token (default CONSUL_HTTP_TOKEN)")
    parser.add_argument(
        "--consul-datacenters",
        help=f"comma-separated datacenters, local first {env('CONSUL_DATACENTERS')}",
    )
    add_security_arguments(parser)


def settings_from(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ

    def pick(flag: str) -> str | None:
        value = getattr(args, flag, None)
        if value is None:
            value = environ.get(_ENV + flag.upper())
        return value

    base = Settings()
    ads = pick("ads_listen")
    admin = pick("admin_listen")
    registry = pick("registry") or base.registry
    store = pick("store") or base.store
    if registry.split(":", 1)[0] not in {"static", "consul"}:
        raise SettingsError(f"--registry: expected static:PATH or consul, got {registry!r}")
    if store.split(":", 1)[0] not in {"sqlite", "consul-kv"} or ":" not in store:
        raise SettingsError(f"--store: expected sqlite:PATH or consul-kv:PREFIX, got {store!r}")
    log_level = (pick("log_level") or base.log_level).lower()
    if log_level not in {"debug", "info", "warning", "error"}:
        raise SettingsError(f"--log-level: expected debug, info, warning or error: {log_level!r}")
    log_format = (pick("log_format") or base.log_format).lower()
    if log_format not in {"json", "text"}:
        raise SettingsError(f"--log-format: expected json or text, got {log_format!r}")
    consul: dict[str, str] = {}
    for flag, key in (
        ("consul_addr", "CONSUL_HTTP_ADDR"),
        ("consul_token", "CONSUL_HTTP_TOKEN"),
        ("consul_datacenters", "datacenters"),
    ):
        value = pick(flag)
        if value:
            consul[key] = value
    debounce = pick("debounce")
    max_delay = pick("max_delay")
    try:
        security = security_from(pick)
    except ValueError as error:
        raise SettingsError(str(error)) from error
    return Settings(
        ads_listen=Address.parse(ads, "--ads-listen") if ads else base.ads_listen,
        admin_listen=Address.parse(admin, "--admin-listen") if admin else base.admin_listen,
        registry=registry,
        store=store,
        log_level=log_level,
        log_format=log_format,
        debounce=_duration(debounce, "--debounce") if debounce else base.debounce,
        max_delay=_duration(max_delay, "--max-delay") if max_delay else base.max_delay,
        consul=consul,
        security=security,
    )


def parse_serve(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="xds-server serve")
    add_serve_arguments(parser)
    return settings_from(parser.parse_args(list(argv)), environ)
