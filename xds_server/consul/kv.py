"""The Consul KV calls the Consul KV store makes (``GET /v1/kv``, ``PUT /v1/txn``) over aiohttp,
and the fleet view's (a blocking recursive read of a prefix; sessions in ``sessions``).

Why not py-consul: its ``Txn.put`` sends no ACL token (a known gap), and a 409 from
``/v1/txn`` (a failed ``cas``) is an ordinary outcome here, not an exception. Every other
failure is a :class:`~xds_server.consul.errors.ConsulError`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from xds_server.consul.errors import (
    ConsulAclDenied,
    ConsulBadResponse,
    ConsulError,
    ConsulHttpError,
    ConsulTooLarge,
)
from xds_server.consul.http import (
    AsyncClient,
    blocking_deadline,
    describe,
    go_duration,
    one_line,
    ssl_context,
    transport_failures,
)
from xds_server.consul.pacing import Backoff
from xds_server.consul.settings import ConsulSettings

log = logging.getLogger("xds_server.consul")

#: Consul's defaults: operations per ``/v1/txn`` and bytes per value (``kv_max_value_size``).
MAX_TXN_OPS = 128
MAX_VALUE_SIZE = 512 * 1024


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes | None
    modify_index: int
    #: The session holding the key's lock ("" when none): Consul's DirEntry ``Session``.
    session: str = ""


@dataclass(frozen=True, slots=True)
class TxnOutcome:
    """``ok``: the results (one entry per key read or written); else Consul's errors."""

    ok: bool
    entries: tuple[KvEntry, ...]
    errors: tuple[tuple[int, str], ...]


def kv_op(
    verb: str,
    key: str,
    value: bytes | None = None,
    index: int | None = None,
    session: str | None = None,
) -> Any:
    """One ``/v1/txn`` KV operation (``session`` for ``lock``/``unlock``/``check-session``)."""
    op: dict[str, Any] = {"Verb": verb, "Key": key}
    if value is not None:
        op["Value"] = base64.b64encode(value).decode("ascii")
    if index is not None:
        op["Index"] = index
    if session is not None:
        op["Session"] = session
    return {"KV": op}


class ConsulKv(AsyncClient):
    """Async context manager owning one aiohttp session to Consul (``max_connections``)."""

    def __init__(self, settings: ConsulSettings, max_connections: int = 4) -> None:
        self.settings = settings
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        #: Requests sent (instrumentation for tests).
        self.requests = 0

    async def open(self) -> None:
        s = self.settings
        headers = {"X-Consul-Token": s.token} if s.token else {}
        self._session = aiohttp.ClientSession(
            base_url=s.base_url,
            headers=headers,
            connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=ssl_context(s)),
            timeout=aiohttp.ClientTimeout(total=None),  # each request has its own deadline
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- the calls ---------------------------------------------------------------------------

    async def get(
        self, key: str, *, index: int = 0, wait: float | None = None
    ) -> tuple[int, KvEntry | None]:
        """``GET /v1/kv/<key>`` (blocking when ``index`` > 0): (X-Consul-Index, entry)."""
        params: dict[str, str] = {}
        deadline = self.settings.request_timeout
        if index > 0:
            wait = self.settings.wait if wait is None else wait
            params = {"index": str(index), "wait": go_duration(wait)}
            deadline = blocking_deadline(self.settings, wait)
        status, headers, body = await self._request("GET", f"/v1/kv/{key}", params, None, deadline)
        new_index = _index_header(headers)
        if status == 404:
            return new_index, None
        if status != 200:
            raise _failure(status, body, f"GET {key}")
        entries = _entries(_json(body), f"GET {key}")
        return new_index, entries[0] if entries else None

    async def get_tree(
        self, prefix: str, *, index: int = 0, wait: float | None = None
    ) -> tuple[int, list[KvEntry]]:
        """``GET /v1/kv/<prefix>?recurse`` (blocking when ``index`` > 0): (index, entries)."""
        params: dict[str, str] = {"recurse": ""}
        deadline = self.settings.request_timeout
        if index > 0:
            wait = self.settings.wait if wait is None else wait
            params.update(index=str(index), wait=go_duration(wait))
            deadline = blocking_deadline(self.settings, wait)
        status, headers, body = await self._request(
            "GET", f"/v1/kv/{prefix}", params, None, deadline
        )
        new_index = _index_header(headers)
        if status == 404:
            return new_index, []
        if status != 200:
            raise _failure(status, body, f"GET {prefix}?recurse")
        return new_index, _entries(_json(body), f"GET {prefix}?recurse")

    async def call(
        self, method: str, path: str, data: Any = None, params: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """Any other call (``/v1/session/…``): (status, JSON body); failures raise, but a 404
        is the caller's to read (a session that is gone)."""
        payload = None if data is None else json.dumps(data, separators=(",", ":")).encode()
        status, _, body = await self._request(
            method, path, params or {}, payload, self.settings.request_timeout
        )
        if status == 404:
            return status, None
        if status != 200:
            raise _failure(status, body, f"{method} {path}")
        return status, _json(body)

    async def txn(self, ops: Sequence[Any]) -> TxnOutcome:
        """``PUT /v1/txn``: atomically all of ``ops`` or none (409: ``errors`` say why)."""
        data = json.dumps(list(ops), separators=(",", ":")).encode()
        status, _, body = await self._request(
            "PUT", "/v1/txn", {}, data, self.settings.request_timeout
        )
        if status in (200, 409):
            reply = _json(body)
            if not isinstance(reply, Mapping):
                raise ConsulBadResponse("Consul /v1/txn: the answer is not a JSON object")
            results = reply.get("Results") or []
            errors = reply.get("Errors") or []
            entries = tuple(
                e for r in results if isinstance(r, Mapping) for e in _entries([r.get("KV")], "txn")
            )
            problems = tuple(
                (int(e.get("OpIndex", -1)), str(e.get("What", "")))
                for e in errors
                if isinstance(e, Mapping)
            )
            return TxnOutcome(status == 200 and not problems, entries, problems)
        if status == 413:
            raise ConsulTooLarge(f"Consul refused the change as too large: {one_line(body)}")
        raise _failure(status, body, "PUT /v1/txn")

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        data: bytes | None,
        deadline: float,
    ) -> tuple[int, Mapping[str, str], str]:
        session = self._session
        if session is None:
            raise RuntimeError("ConsulKv used while not open")
        self.requests += 1
        with transport_failures(self.settings.base_url, deadline):
            async with (
                asyncio.timeout(deadline),
                session.request(method, path, params=params, data=data) as response,
            ):
                body = await response.text(errors="replace")
                return response.status, response.headers, body


def _index_header(headers: Mapping[str, str]) -> int:
    raw_index = headers.get("X-Consul-Index", "0")
    try:
        return int(raw_index)
    except ValueError:
        raise ConsulBadResponse(f"Consul sent an invalid X-Consul-Index {raw_index!r}") from None


def _failure(status: int, body: str, what: str) -> ConsulHttpError | ConsulAclDenied:
    text = one_line(body) or f"HTTP {status}"
    if status == 403:
        return ConsulAclDenied(
            f"Consul ACL: permission denied for {what} — check CONSUL_HTTP_TOKEN ({text})"
        )
    return ConsulHttpError(f"Consul answered {status} to {what}: {text}")


def _json(body: str) -> Any:
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        raise ConsulBadResponse(f"Consul sent invalid JSON: {one_line(body, 80)!r}") from None


def _entries(data: Any, what: str) -> list[KvEntry]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConsulBadResponse(f"Consul {what}: expected a list of KV entries")
    out: list[KvEntry] = []
    for item in data:
        if item is None:
            continue
        if not isinstance(item, Mapping) or not isinstance(item.get("Key"), str):
            raise ConsulBadResponse(f"Consul {what}: a KV entry without a key")
        raw = item.get("Value")
        try:
            value = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
            modify_index = int(item.get("ModifyIndex", 0))
        except (ValueError, TypeError):
            raise ConsulBadResponse(f"Consul {what}: an invalid KV entry") from None
        session = item.get("Session")
        out.append(
            KvEntry(item["Key"], value, modify_index, session if isinstance(session, str) else "")
        )
    return out


class PrefixFollower:
    """Blocks on ``GET /v1/kv/<prefix>?recurse`` and hands every new answer to ``on_entries``.

    Consul's index rules: an index that goes backwards is taken as it is, 0 is sent as 1, and
    errors back off with jitter (never a hot loop).
    """

    def __init__(
        self,
        kv: ConsulKv,
        prefix: str,
        on_entries: Callable[[list[KvEntry]], None],
        backoff: Backoff | None = None,
    ) -> None:
        self._kv = kv
        self.prefix = prefix
        self._on_entries = on_entries
        self._backoff = backoff or Backoff(0.5, 10.0)
        self.last_error: str | None = None
        #: Answers read (instrumentation).
        self.reads = 0

    async def run(self) -> None:
        index = 0  # the first read does not block; later ones wait for a newer index
        while True:
            try:
                new_index, entries = await self._kv.get_tree(self.prefix, index=index)
                self.reads += 1
                if new_index != index:
                    self._on_entries(entries)
                index = max(new_index, 1)
                self._backoff.reset()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except ConsulError as error:
                if describe(error) != self.last_error:
                    log.warning("consul: following %s failed: %s", self.prefix, describe(error))
                self.last_error = describe(error)
                await self._backoff.sleep()
