"""Where the mesh CA keeps its roots: a ``RootVault`` (the config store's secret side channel).

Keys and values (JSON, written once, never in the config's history or a default export):

- ``mesh/ca/builtin``: the built-in root the mesh issues from, ``{certificate, private_key,
  created_at, trust_domain}``. The first replica to need one stores it with ``put_if_absent``;
  every other replica (and every restart) reads it, so all issue from the same root.
- ``mesh/ca/builtin/next/<fingerprint>/<trust domain>``: the successor chosen for that root
  (a new trust domain, or an explicit rotation), stored with ``put_if_absent`` too, so replicas
  rotating the same root at once agree on its successor; then ``mesh/ca/builtin`` is replaced.
- ``mesh/ca/rotation``: a root rotation under way (``encode_rotation``): the roots of the trust
  bundle (issuing one first, with their keys: the old root may still issue), the target, the
  next step and when it is due; ``""`` once no rotation is under way. Written before each
  step is published, so that a server killed mid-rotation resumes it with the same bundle.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from xds_server.mesh.ca import BUILTIN, MeshCaError, RootCa, ca_from_pem, rfc3339

BUILTIN_KEY: Final = "mesh/ca/builtin"
ROTATION_KEY: Final = "mesh/ca/rotation"
#: What ``ROTATION_KEY`` holds when no rotation is under way.
NO_ROTATION: Final = ""


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


@dataclass(frozen=True, slots=True)
class StoredRotation:
    """A rotation under way, as ``ROTATION_KEY`` keeps it."""

    #: The trust bundle, the issuing root first.
    trusted: tuple[RootCa, ...]
    #: Fingerprints of the issuing root and of the root the rotation goes to.
    active: str
    target: str
    #: ``issue`` or ``retire`` (the next step).
    step: str
    due: dt.datetime


def _chain_pem(root: RootCa) -> str:
    """The PEM ``ca_from_pem`` reads ``root`` back from: the CA, then its issuers."""
    chain = root.intermediates or root.certificate
    return chain if root.trust_anchor in chain else chain + root.trust_anchor


def encode_rotation(
    trusted: Sequence[RootCa], active: RootCa, target: RootCa, step: str, due: dt.datetime
) -> str:
    roots = [
        {"chain": _chain_pem(r), "private_key": r.private_key, "provider": r.provider}
        for r in trusted
    ]
    return json.dumps(
        {
            "roots": roots,
            "active": active.fingerprint,
            "target": target.fingerprint,
            "step": step,
            "due": rfc3339(due),
        },
        sort_keys=True,
    )


def _root_of(data: Any) -> RootCa:
    return ca_from_pem(str(data["chain"]), str(data["private_key"]), str(data["provider"]))


def decode_rotation(value: str | None) -> StoredRotation | None:
    """The rotation stored under ``ROTATION_KEY`` (None: none, or one that cannot be read:
    then the server starts from the configured root, as without a record)."""
    if not value:
        return None
    try:
        data = json.loads(value)
        trusted = tuple(_root_of(root) for root in data["roots"])
        stored = StoredRotation(
            trusted,
            str(data["active"]),
            str(data["target"]),
            str(data["step"]),
            dt.datetime.fromisoformat(str(data["due"])),
        )
    except (ValueError, TypeError, KeyError):  # MeshCaError is a ValueError
        return None
    known = {root.fingerprint for root in trusted}
    if stored.step not in ("issue", "retire") or not {stored.active, stored.target} <= known:
        return None
    return stored
