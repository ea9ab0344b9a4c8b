"""The few Consul KV calls the Consul KV store makes, over aiohttp, with failures typed.

Why not py-consul: its ``Txn.put`` sends no ACL token (a known gap), and a 409 from
``/v1/txn`` (a failed ``cas``) is an ordinary outcome here, not an exception. Why not the
source's ``ConsulApi``: ``store`` and ``sources`` are independent packages; the wiring
(``app.py``) turns the source's ``ConsulSettings`` into :class:`ConsulKvSettings`, so both talk
to Consul with the same address, token and TLS settings (``CONSUL_HTTP_ADDR`` …).

Failures leave as store errors: anything that means "Consul cannot answer now" (refused,
timeout, TLS, 5xx, no leader, ACL denied) is :class:`StoreUnavailable` with a one-line reason;
a request Consul refuses as too large is :class:`InvalidChange`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from xds_server.store.base import InvalidChange, StoreError, StoreUnavailable

#: Consul's defaults: operations per ``/v1/txn`` and bytes per value (``kv_max_value_size``).
MAX_TXN_OPS = 128
MAX_VALUE_SIZE = 512 * 1024


@dataclass(frozen=True, slots=True)
class ConsulKvSettings:
    """How to reach Consul; durations in seconds. Built from the source's ``ConsulSettings``."""

    base_url: str = "http://127.0.0.1:8500"
    token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    #: Deadline of a non-blocking request (and of connecting).
    request_timeout: float = 10.0
    #: ``wait`` of the blocking query on the revision key.
    wait: float = 300.0
    #: Connections to Consul (one blocking watch + writes + reads).
    max_connections: int = 4
    #: Operations per transaction Consul accepts (``MAX_TXN_OPS`` unless tuned).
    max_txn_ops: int = MAX_TXN_OPS
    #: Back-off of the watch after errors: first delay and cap (with jitter).
    backoff_base: float = 0.2
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if self.request_timeout <= 0 or not 0 < self.wait <= 600:
            raise ValueError("request_timeout must be positive and wait in (0, 600] seconds")
        if self.max_connections < 2:
            raise ValueError("max_connections must be at least 2 (a watch and a write)")
        if self.max_txn_ops < 8:
            raise ValueError("max_txn_ops must be at least 8")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a client certificate and its key go together")


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes | None
    modify_index: int


@dataclass(frozen=True, slots=True)
class TxnOutcome:
    """``ok``: the results (one entry per key read or written); else Consul's errors."""

    ok: bool
    entries: tuple[KvEntry, ...]
    errors: tuple[tuple[int, str], ...]


def go_duration(seconds: float) -> str:
    millis = max(round(seconds * 1000), 1)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def kv_op(verb: str, key: str, value: bytes | None = None, index: int | None = None) -> Any:
    """One ``/v1/txn`` KV operation."""
    op: dict[str, Any] = {"Verb": verb, "Key": key}
    if value is not None:
        op["Value"] = base64.b64encode(value).decode("ascii")
    if index is not None:
        op["Index"] = index
    return {"KV": op}


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class ConsulKv:
    """Async context manager owning one aiohttp session to Consul."""

    def __init__(self, settings: ConsulKvSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        #: Requests sent (instrumentation for tests).
        self.requests = 0

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        s = self.settings
        ssl_option: ssl.SSLContext | bool = False
        if s.base_url.startswith("https://"):
            if s.verify:
                context = ssl.create_default_context(cafile=s.ca_file)
            else:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if s.cert_file and s.key_file:
                context.load_cert_chain(s.cert_file, s.key_file)
            ssl_option = context
        headers = {"X-Consul-Token": s.token} if s.token else {}
        self._session = aiohttp.ClientSession(
            base_url=s.base_url,
            headers=headers,
            connector=aiohttp.TCPConnector(limit=s.max_connections, ssl=ssl_option),
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
            deadline += wait * 17 / 16  # Consul adds up to wait/16 of jitter
        status, headers, body = await self._request("GET", f"/v1/kv/{key}", params, None, deadline)
        raw_index = headers.get("X-Consul-Index", "0")
        try:
            new_index = int(raw_index)
        except ValueError:
            raise StoreUnavailable(f"Consul sent an invalid X-Consul-Index {raw_index!r}") from None
        if status == 404:
            return new_index, None
        if status != 200:
            raise self._failure(status, body, f"GET {key}")
        entries = _entries(_json(body), f"GET {key}")
        return new_index, entries[0] if entries else None

    async def txn(self, ops: Sequence[Any]) -> TxnOutcome:
        """``PUT /v1/txn``: atomically all of ``ops`` or none (409: ``errors`` say why)."""
        if len(ops) > self.settings.max_txn_ops:
            raise InvalidChange(
                f"one change to Consul KV would take {len(ops)} operations; a Consul"
                f" transaction allows {self.settings.max_txn_ops}: split it into smaller commits"
            )
        data = json.dumps(list(ops), separators=(",", ":")).encode()
        status, _, body = await self._request(
            "PUT", "/v1/txn", {}, data, self.settings.request_timeout
        )
        if status in (200, 409):
            reply = _json(body)
            if not isinstance(reply, Mapping):
                raise StoreUnavailable("Consul /v1/txn: the answer is not a JSON object")
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
            raise InvalidChange(f"Consul refused the change as too large: {_one_line(body)}")
        raise self._failure(status, body, "PUT /v1/txn")

    # -- plumbing ----------------------------------------------------------------------------

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
            raise StoreError("the Consul KV client is not open")
        where = self.settings.base_url
        self.requests += 1
        try:
            async with (
                asyncio.timeout(deadline),
                session.request(method, path, params=params, data=data) as response,
            ):
                body = await response.text(errors="replace")
                return response.status, response.headers, body
        except TimeoutError:
            raise StoreUnavailable(f"Consul at {where} did not answer in {deadline:g}s") from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise StoreUnavailable(f"TLS with Consul at {where} failed: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = _one_line(str(exc)) or type(exc).__name__
            raise StoreUnavailable(f"cannot reach Consul at {where}: {reason}") from None

    @staticmethod
    def _failure(status: int, body: str, what: str) -> StoreUnavailable:
        text = _one_line(body) or f"HTTP {status}"
        if status == 403:
            return StoreUnavailable(
                f"Consul ACL: permission denied for {what} — check CONSUL_HTTP_TOKEN ({text})"
            )
        return StoreUnavailable(f"Consul answered {status} to {what}: {text}")


def _json(body: str) -> Any:
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        raise StoreUnavailable(f"Consul sent invalid JSON: {_one_line(body, 80)!r}") from None


def _entries(data: Any, what: str) -> list[KvEntry]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise StoreUnavailable(f"Consul {what}: expected a list of KV entries")
    out: list[KvEntry] = []
    for item in data:
        if item is None:
            continue
        if not isinstance(item, Mapping) or not isinstance(item.get("Key"), str):
            raise StoreUnavailable(f"Consul {what}: a KV entry without a key")
        raw = item.get("Value")
        try:
            value = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
            modify_index = int(item.get("ModifyIndex", 0))
        except (ValueError, TypeError):
            raise StoreUnavailable(f"Consul {what}: an invalid KV entry") from None
        out.append(KvEntry(item["Key"], value, modify_index))
    return out
