"""Where the mesh CA keeps its roots: a ``RootVault`` (the config store's secret side channel).

Keys and values (JSON, written once, never in the config's history or a default export):

- ``mesh/ca/builtin``: the built-in root the mesh issues from, ``{certificate, private_key,
  created_at, trust_domain}``. The first replica to need one stores it with ``put_if_absent``;
  every other replica (and every restart) reads it, so all issue from the same root.
- ``mesh/ca/builtin/next/<fingerprint>/<trust domain>``: the successor chosen for that root
  (a new trust domain, or an explicit rotation), stored with ``put_if_absent`` too, so replicas
  rotating the same root at once agree on its successor; then ``mesh/ca/builtin`` is replaced.
"""

from __future__ import annotations

import json
from typing import Final, Protocol

from xds_server.mesh.ca import BUILTIN, MeshCaError, RootCa, ca_from_pem, rfc3339

BUILTIN_KEY: Final = "mesh/ca/builtin"


class RootVault(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def put_if_absent(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` is taken; return what is stored (ours, or the value
        another replica stored first)."""
        ...

    async def put(self, key: str, value: str) -> None: ...


class SecretStore(Protocol):
    """The part of the config store (``ConfigStore``) a vault needs."""

    async def get_secret(self, key: str) -> str | None: ...

    async def put_secret_if_absent(self, key: str, value: str) -> str: ...

    async def put_secret(self, key: str, value: str) -> None: ...


class StoreVault:
    """A ``RootVault`` on the config store's secret side channel: ``StoreVault(store)``."""

    def __init__(self, store: SecretStore) -> None:
        self._store = store

    async def get(self, key: str) -> str | None:
        return await self._store.get_secret(key)

    async def put_if_absent(self, key: str, value: str) -> str:
        return await self._store.put_secret_if_absent(key, value)

    async def put(self, key: str, value: str) -> None:
        await self._store.put_secret(key, value)


class MemoryVault:
    """A ``RootVault`` in memory (tests, trying things out)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def put_if_absent(self, key: str, value: str) -> str:
        return self.values.setdefault(key, value)

    async def put(self, key: str, value: str) -> None:
        self.values[key] = value


def successor_key(root: RootCa, trust_domain: str) -> str:
    return f"{BUILTIN_KEY}/next/{root.fingerprint.replace(':', '').lower()}/{trust_domain}"


def encode_root(root: RootCa, trust_domain: str) -> str:
    return json.dumps(
        {
            "certificate": root.certificate,
            "private_key": root.private_key,
            "created_at": rfc3339(root.not_before),
            "trust_domain": trust_domain,
        },
        sort_keys=True,
    )


def decode_root(value: str, key: str) -> tuple[RootCa, str]:
    """The root stored under ``key`` and the trust domain it was made for."""
    try:
        data = json.loads(value)
        certificate, private_key = data["certificate"], data["private_key"]
        trust_domain = str(data.get("trust_domain", ""))
    except (ValueError, TypeError, KeyError):
        raise MeshCaError(f"the stored mesh CA root {key} is not readable") from None
    try:
        return ca_from_pem(str(certificate), str(private_key), BUILTIN), trust_domain
    except MeshCaError as error:
        raise MeshCaError(f"the stored mesh CA root {key}: {error}") from None
