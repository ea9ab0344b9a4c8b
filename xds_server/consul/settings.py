"""How to reach Consul, from Consul's own environment variables.

Operators already set ``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN`` (or
``CONSUL_HTTP_TOKEN_FILE``), ``CONSUL_CACERT``, ``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``,
``CONSUL_HTTP_SSL`` and ``CONSUL_HTTP_SSL_VERIFY`` for the ``consul`` CLI; we read the same
names with the same meaning, and explicit values (command-line flags) override them.
Nothing is read at import time: the wiring calls ``ConsulSettings.from_env(os.environ)``.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class ConsulSettings:
    """Address, ACL token, TLS and deadlines of the requests to Consul; durations in seconds."""

    host: str = "127.0.0.1"
    port: int = 8500
    scheme: str = "http"
    #: ACL token sent with every request (``X-Consul-Token``); None: anonymous.
    token: str | None = None
    #: CA bundle for HTTPS (``CONSUL_CACERT``); None: the system's trust store.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: Verify the server certificate (``CONSUL_HTTP_SSL_VERIFY``).
    verify: bool = True
    #: Deadline of non-blocking requests and of connecting.
    request_timeout: float = 30.0
    #: ``wait`` of blocking queries.
    wait: float = 300.0

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ValueError(f"Consul scheme must be http or https, not {self.scheme!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"Consul port out of range: {self.port}")
        if self.wait <= 0 or self.wait > 600:
            raise ValueError("wait must be in (0, 600] seconds (Consul caps it at 10 minutes)")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY go together")

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> ConsulSettings:
        """Settings from Consul's environment variables, then ``overrides`` on top.

        ``overrides`` takes any field name, plus ``address`` (``host:port`` or a URL, like
        ``CONSUL_HTTP_ADDR``); a None value means "not given" and keeps the environment's.
        Raises ``ValueError`` (one line, for the operator) on an invalid value.
        """
        values: dict[str, Any] = {}
        scheme: str | None = None
        address = overrides.pop("address", None) or env.get("CONSUL_HTTP_ADDR")
        if address:
            scheme, values["host"], values["port"] = parse_address(address)
        ssl = env.get("CONSUL_HTTP_SSL")
        if ssl and "scheme" not in overrides:  # as in Consul's api package: it wins
            scheme = "https" if _bool("CONSUL_HTTP_SSL", ssl) else "http"
        if scheme:
            values["scheme"] = scheme
        values["token"] = _token(env)
        values["ca_file"] = env.get("CONSUL_CACERT") or None
        values["cert_file"] = env.get("CONSUL_CLIENT_CERT") or None
        values["key_file"] = env.get("CONSUL_CLIENT_KEY") or None
        if verify := env.get("CONSUL_HTTP_SSL_VERIFY"):
            values["verify"] = _bool("CONSUL_HTTP_SSL_VERIFY", verify)
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in overrides.items():
            if key not in names:
                raise TypeError(f"unknown Consul setting {key!r}")
            if value is not None:
                values[key] = value
        return cls(**values)


def parse_address(address: str) -> tuple[str | None, str, int]:
    """``CONSUL_HTTP_ADDR`` → (scheme or None, host, port).

    Without a port: 443 for an ``https://`` URL (as Consul's CLI would connect), else 8500,
    Consul's own default port.
    """
    text = address.strip()
    if "://" not in text:
        text = "//" + text
    parsed = urllib.parse.urlsplit(text)
    scheme = parsed.scheme or None
    if scheme not in (None, "http", "https"):
        raise ValueError(f"CONSUL_HTTP_ADDR {address!r}: only http and https are supported")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"CONSUL_HTTP_ADDR {address!r}: invalid port") from None
    if port is None:
        port = 443 if scheme == "https" else 8500
    if not parsed.hostname:
        raise ValueError(f"CONSUL_HTTP_ADDR {address!r}: no host")
    return scheme, parsed.hostname, port


def _token(env: Mapping[str, str]) -> str | None:
    token = env.get("CONSUL_HTTP_TOKEN") or None
    if token is None and (token_file := env.get("CONSUL_HTTP_TOKEN_FILE")):
        try:
            token = Path(token_file).read_text().strip() or None
        except OSError as exc:
            raise ValueError(f"CONSUL_HTTP_TOKEN_FILE {token_file}: {exc.strerror}") from None
    return token


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not a boolean")
