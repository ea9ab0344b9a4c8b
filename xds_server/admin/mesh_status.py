"""The read-only ``status`` of ``GET /v1/mesh``: the mesh CA and the identities it issued.

The wiring injects the source (``AdminContext.mesh_status``, backed by the CA authority); the
admin API only shows it. Whatever the source returns, nothing that looks like key material
leaves the server: fields named like a key and any text holding a PEM private key are
dropped (the source should never return them; this is the second line).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from xds_server.model.mesh import RootRotationRefused

log = logging.getLogger("xds_server.admin")

#: What the wiring injects: the status now, as JSON-ready values.
MeshStatusSource = Callable[[], Mapping[str, Any]]
#: What the wiring injects for ``POST /v1/mesh/rotate-root``: start rotating the built-in root
#: (None), or why not (a 409).
MeshRootRotation = Callable[[], Awaitable[RootRotationRefused | None]]

_KEY_MARK: Final = "PRIVATE KEY"
_KEY_FIELDS: Final = frozenset({"private_key", "key", "key_pem", "private_key_pem"})


def _date_time(*default: None, description: str | None = None) -> Any:
    """An RFC 3339 time field (``_date_time(None)``: optional)."""
    return Field(*default, description=description, json_schema_extra={"format": "date-time"})


class MeshCaStatus(BaseModel):
    """A CA certificate (public facts only)."""

    model_config = ConfigDict(extra="allow")

    subject: str
    fingerprint_sha256: str = Field(description="SHA-256 of the DER certificate, hex pairs.")
    not_before: str | None = _date_time(None)
    not_after: str = _date_time()
    provider: str | None = Field(None, description="builtin or provided.")


class IssuedIdentity(BaseModel):
    """The workload certificate the CA issued to one service's sidecars."""

    model_config = ConfigDict(extra="allow")

    service: str
    spiffe_id: str
    serial: str = Field(description="The certificate's serial number, hex.")
    not_before: str | None = _date_time(None)
    not_after: str = _date_time()
    renew_at: str | None = _date_time(None, description="When it is re-issued (half its life).")
    ca_fingerprint_sha256: str | None = Field(None, description="The CA that issued it.")


class MeshRotation(BaseModel):
    """A root rotation in progress: the new root is trusted first, leaves are re-issued from
    it, the old root leaves the trust bundle last."""

    model_config = ConfigDict(extra="allow")

    to: MeshCaStatus
    next_step: str
    due: str = _date_time()


class MeshStatus(BaseModel):
    """What the mesh CA holds now; never a key."""

    model_config = ConfigDict(extra="allow")

    ca: MeshCaStatus | None = Field(None, description="The root that issues; null until made.")
    trust_bundle: list[MeshCaStatus] = Field(
        default_factory=list, description="Every root the sidecars trust, issuing root first."
    )
    rotation: MeshRotation | None = None
    error: str | None = Field(None, description="Why the CA cannot issue, if it cannot.")
    identities: list[IssuedIdentity] = Field(
        default_factory=list, description="Every identity issued, by service."
    )
    seconds_to_nearest_expiry: float | None = None


def _scrubbed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): _scrubbed(v)
            for k, v in value.items()
            if str(k).lower() not in _KEY_FIELDS and not _holds_key(v)
        }
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value if not _holds_key(v)]
    return value


def _holds_key(value: Any) -> bool:
    return isinstance(value, str | bytes) and _KEY_MARK in (
        value if isinstance(value, str) else value.decode("latin-1")
    )


def status_view(source: MeshStatusSource | None) -> dict[str, Any] | None:
    """The status block, or ``None`` when no source is wired in or it fails (the document
    is still shown: a broken status must not hide the config)."""
    if source is None:
        return None
    try:
        status = source()
    except Exception:
        log.exception("GET /v1/mesh: the mesh status source failed")
        return None
    shown: dict[str, Any] = _scrubbed(status)
    return shown
