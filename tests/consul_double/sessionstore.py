"""One datacenter's sessions, as Consul's session table and lock rules have them.

Facts from Consul's docs (api-docs/session.mdx, docs/dynamic-app-config/sessions) and server:
- ``PUT /v1/session/create`` defaults: the agent's node, ``NodeChecks: ["serfHealth"]``,
  ``LockDelay`` 15s, ``Behavior: release``, no TTL. A TTL must lie between the server's
  ``session_ttl_min`` (10s by default) and 86400s; ``0`` or empty means none.
- A TTL session not renewed is invalidated; the server arms its timer at TTL x 2
  (``SessionTTLMultiplier``), which is why the docs say "may not be reaped for up to double
  this TTL". A renewal re-arms it.
- Invalidation (destroy, TTL expiry) releases (``Behavior: release``: the keys lose their
  ``Session``) or deletes (``delete``) every key the session holds, and sets the lock-delay of
  those keys: for ``LockDelay`` no session may acquire them (0 disables it).
- ``?acquire=S``: fails (false) if another session holds the key or its lock-delay runs;
  a new holder bumps ``LockIndex``; the holder itself just updates the value. ``?release=S``:
  false unless S holds the key; clears ``Session`` (``LockIndex`` stays).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .decode import ConsulError

__all__ = ["DEFAULT_LOCK_DELAY", "MAX_TTL", "TTL_MULTIPLIER", "Session", "SessionTable"]

DEFAULT_LOCK_DELAY = 15.0
MAX_TTL = 86400.0
#: Consul's ``structs.SessionTTLMultiplier``: the server waits TTL x 2 before invalidating.
TTL_MULTIPLIER = 2
BEHAVIORS = ("release", "delete")


@dataclass
class Session:
    id: str
    name: str
    node: str
    lock_delay: float  # seconds
    behavior: str
    ttl: str  # as given ("" when none)
    ttl_seconds: float
    node_checks: list[str]
    service_checks: list[dict[str, Any]] | None
    create_index: int
    modify_index: int
    #: Monotonic time after which the session is invalid (TTL sessions only).
    expires_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": int(self.lock_delay * 1e9),  # nanoseconds, as Consul renders it
            "Behavior": self.behavior,
            "TTL": self.ttl,
            "NodeChecks": list(self.node_checks),
            "ServiceChecks": self.service_checks,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass
class SessionTable:
    ttl_min: float = 10.0
    sessions: dict[str, Session] = field(default_factory=dict)
    #: key -> monotonic time until which no session may acquire it.
    lock_delays: dict[str, float] = field(default_factory=dict)

    def create(
        self,
        index: int,
        *,
        node: str,
        name: str = "",
        lock_delay: float = DEFAULT_LOCK_DELAY,
        behavior: str = "release",
        ttl: str = "",
        ttl_seconds: float = 0.0,
        node_checks: list[str] | None = None,
        service_checks: list[dict[str, Any]] | None = None,
    ) -> Session:
        if behavior not in BEHAVIORS:
            raise ConsulError(500, f"Invalid Behavior setting '{behavior}'")
        if ttl_seconds and not self.ttl_min <= ttl_seconds <= MAX_TTL:
            raise ConsulError(
                500,
                f"Invalid Session TTL '{int(ttl_seconds * 1e9)}', must be between "
                f"[{_go(self.ttl_min)}={_go(MAX_TTL)}]",
            )
        session = Session(
            id=str(uuid.uuid4()),
            name=name,
            node=node,
            lock_delay=lock_delay,
            behavior=behavior,
            ttl=ttl if ttl_seconds else "",
            ttl_seconds=ttl_seconds,
            node_checks=["serfHealth"] if node_checks is None else node_checks,
            service_checks=service_checks,
            create_index=index,
            modify_index=index,
        )
        self.renew(session)
        self.sessions[session.id] = session
        return session

    def renew(self, session: Session) -> float | None:
        """Re-arm the session's timer: the seconds until it fires (None: no TTL)."""
        if not session.ttl_seconds:
            return None
        delay = session.ttl_seconds * TTL_MULTIPLIER
        session.expires_at = time.monotonic() + delay
        return delay

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def expired(self) -> list[Session]:
        now = time.monotonic()
        return [
            s for s in self.sessions.values() if s.expires_at is not None and s.expires_at <= now
        ]

    def remove(self, session: Session, held_keys: list[str]) -> None:
        """Forget ``session``; its keys get its lock-delay."""
        self.sessions.pop(session.id, None)
        if session.lock_delay > 0:
            until = time.monotonic() + session.lock_delay
            for key in held_keys:
                self.lock_delays[key] = until

    def lock_delayed(self, key: str) -> bool:
        until = self.lock_delays.get(key)
        if until is None:
            return False
        if until <= time.monotonic():
            del self.lock_delays[key]
            return False
        return True

    def require(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise ConsulError(500, f'invalid session "{session_id}"')
        return session


def _go(seconds: float) -> str:
    """A Go duration as ``time.Duration.String`` prints whole seconds (``10s``, ``24h0m0s``)."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
