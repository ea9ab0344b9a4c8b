"""Where the config lives under ``PREFIX`` in Consul KV.

- ``PREFIX/revision``: ``{"revision": N, "commit": ID, "time": …}``, the config revision;
- ``PREFIX/docs/<kind>/<name>`` (kind and name percent-encoded): one document each;
- ``PREFIX/history/<revision, 20 digits>/<chunk, 4 digits>``: the revision's history entries;
- ``PREFIX/secrets/<key>``: the secret side channel (raw values; not documents, no history).
"""

from __future__ import annotations

import re
import urllib.parse

_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def normalise_prefix(prefix: str) -> str:
    """``"/xds/config/"`` → ``"xds/config"``; raises ``ValueError`` on an unusable prefix."""
    cleaned = prefix.strip().strip("/")
    if not cleaned or not _PREFIX.match(cleaned) or ".." in cleaned.split("/"):
        raise ValueError(
            f"consul-kv prefix {prefix!r}: use letters, digits, '.', '_', '-' and '/' "
            "(e.g. xds-server/config)"
        )
    return cleaned


class KeyLayout:
    """The keys of one config, under a normalised ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.tree = f"{prefix}/"
        self.revision = f"{prefix}/revision"
        self.docs = f"{prefix}/docs/"
        self.history = f"{prefix}/history/"
        self.secrets = f"{prefix}/secrets/"

    def doc(self, kind: str, name: str) -> str:
        return f"{self.docs}{_quote(kind)}/{_quote(name)}"

    def secret(self, key: str) -> str:
        """``key`` is checked by the store (``check_secret_key``): safe in a KV path."""
        return f"{self.secrets}{key}"

    def history_of(self, revision: int) -> str:
        return f"{self.history}{revision:020d}/"

    def chunk(self, revision: int, number: int) -> str:
        return f"{self.history_of(revision)}{number:04d}"


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
