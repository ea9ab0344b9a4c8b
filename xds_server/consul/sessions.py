"""Ephemeral keys: values a process keeps in Consul KV only while it lives, under a session.

Consul's own mechanism (docs/dynamic-app-config/sessions, api-docs/session.mdx): a session
created with a ``TTL`` and ``Behavior: delete`` is renewed (``PUT /v1/session/renew/:uuid``)
while the process runs; keys written with it (txn ``lock``, the ``?acquire=`` of a
transaction) are deleted by Consul when the session is destroyed (clean shutdown) or expires
(the process died: Consul invalidates it between TTL and 2 x TTL after the last renewal).
``LockDelay`` is 0: a restarted process may take its keys back at once.

:class:`EphemeralKeys` writes at most once per interval, and only the keys whose value changed,
all of them in one ``/v1/txn`` when they fit (Consul's default ``txn_max_req_len`` is 512 KB).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from xds_server.consul.errors import ConsulError
from xds_server.consul.http import describe
from xds_server.consul.kv import MAX_TXN_OPS, ConsulKv, kv_op
from xds_server.consul.pacing import Backoff

log = logging.getLogger("xds_server.consul")

#: Raw bytes per transaction (base64 in JSON adds a third: stays under 512 KB).
TXN_BYTES = 300 * 1024
#: Seconds a clean shutdown waits for Consul to destroy the session.
CLOSE_TIMEOUT = 2.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def ttl_text(seconds: float) -> str:
    """A session TTL as Consul reads it: whole seconds (``"10s"``)."""
    return f"{max(round(seconds), 1)}s"


def parse_ttl(text: Any, default: float) -> float:
    """A TTL Consul sent back (it may raise it under load), or ``default``."""
    match = _DURATION.match(str(text or ""))
    return float(match.group(1)) * _UNITS[match.group(2)] if match else default


class ConsulSessions:
    """``/v1/session/create|renew|destroy`` over a :class:`ConsulKv` connection."""

    def __init__(self, kv: ConsulKv) -> None:
        self._kv = kv

    async def create(self, name: str, ttl: float, behavior: str = "delete") -> str:
        body = {"Name": name, "TTL": ttl_text(ttl), "Behavior": behavior, "LockDelay": "0s"}
        status, reply = await self._kv.call("PUT", "/v1/session/create", body)
        if status != 200 or not isinstance(reply, Mapping) or not reply.get("ID"):
            raise ConsulError(f"Consul did not create the session {name!r}")
        return str(reply["ID"])

    async def renew(self, session_id: str) -> float | None:
        """The TTL Consul now grants (it may be longer than asked), None: the session is gone."""
        status, reply = await self._kv.call("PUT", f"/v1/session/renew/{session_id}")
        if status == 404:
            return None
        first = reply[0] if isinstance(reply, list) and reply else {}
        return parse_ttl(first.get("TTL") if isinstance(first, Mapping) else None, 0.0)

    async def destroy(self, session_id: str) -> None:
        await self._kv.call("PUT", f"/v1/session/destroy/{session_id}")


def batches(ops: list[tuple[Any, int]]) -> list[list[Any]]:
    """``(op, size)`` pairs in transactions of at most :data:`TXN_BYTES` and 128 operations."""
    out: list[list[Any]] = []
    current: list[Any] = []
    size = 0
    for op, op_size in ops:
        if current and (size + op_size > TXN_BYTES or len(current) >= MAX_TXN_OPS):
            out.append(current)
            current, size = [], 0
        current.append(op)
        size += op_size
    if current:
        out.append(current)
    return out


class EphemeralKeys:
    """Keeps ``prefix`` + each key of ``values()`` in Consul while this process lives."""

    def __init__(
        self,
        kv: ConsulKv,
        prefix: str,
        name: str,
        ttl: float,
        backoff: Backoff | None = None,
    ) -> None:
        self._kv = kv
        self._sessions = ConsulSessions(kv)
        self.prefix = prefix
        self._name = name
        self._ttl = ttl
        self._backoff = backoff or Backoff(0.5, 10.0)
        self.session_id: str | None = None
        #: What Consul holds, as this process last wrote it (None: nothing known).
        self._written: dict[str, bytes] = {}
        self._renew_at = 0.0
        #: Writes (transactions) sent, for the benchmark and tests.
        self.writes = 0
        self.last_error: str | None = None

    async def run(self, values: Callable[[], Mapping[str, bytes]], interval: float) -> None:
        """Every ``interval``: renew the session when due, write what changed."""
        while True:
            try:
                await self.step(values())
                self._backoff.reset()
                if self.last_error is not None:
                    log.info("fleet: publishing to Consul again")
                    self.last_error = None
            except asyncio.CancelledError:
                raise
            except ConsulError as error:
                if describe(error) != self.last_error:
                    log.warning("fleet: publishing to Consul failed: %s", describe(error))
                self.last_error = describe(error)
                await self._backoff.sleep()
                continue
            await asyncio.sleep(interval)

    async def step(self, current: Mapping[str, bytes]) -> None:
        await self._keep_session()
        assert self.session_id is not None
        changed = [(k, v) for k, v in current.items() if self._written.get(k) != v]
        stale = [k for k in self._written if k not in current]
        ops = [
            (kv_op("lock", self.prefix + k, v, session=self.session_id), len(v) + len(k))
            for k, v in changed
        ]
        ops += [(kv_op("delete", self.prefix + k), len(k)) for k in stale]
        for batch in batches(ops):
            self.writes += 1
            outcome = await self._kv.txn(batch)
            if not outcome.ok:
                # Another session holds a key (a previous life of this process, until its
                # session expires): write everything again next time.
                self._written = {}
                what = "; ".join(message for _, message in outcome.errors)
                raise ConsulError(f"Consul refused the fleet summary: {what}")
        self._written = dict(current)

    async def _keep_session(self) -> None:
        now = time.monotonic()
        if self.session_id is not None and now >= self._renew_at:
            granted = await self._sessions.renew(self.session_id)
            if granted is None:
                log.warning("fleet: Consul session %s expired; creating another", self.session_id)
                self.session_id = None
            else:
                self._renew_at = now + max(granted or self._ttl, self._ttl) / 2
        if self.session_id is None:
            self._written = {}  # Consul deleted the keys of the lost session
            self.session_id = await self._sessions.create(self._name, self._ttl)
            self._renew_at = time.monotonic() + self._ttl / 2

    async def close(self) -> None:
        """Destroy the session: Consul deletes its keys at once."""
        session_id, self.session_id = self.session_id, None
        if session_id is not None:
            try:
                # Shutdown does not wait long for an unreachable Consul: the TTL cleans up.
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._sessions.destroy(session_id)
            except (ConsulError, TimeoutError) as error:
                log.warning("fleet: could not destroy Consul session: %s", describe(error))
