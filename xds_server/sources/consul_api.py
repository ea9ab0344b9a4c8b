"""The Consul reads the watcher makes, over py-consul, bounded and typed.

Why a wrapper rather than py-consul directly:

- **one bound for everything**: semaphores around every request (the blocking watches'
  reserved slots plus the reads' share add up to ``max_concurrent_queries``) and the aiohttp
  connector of py-consul's session limited to the same number, so neither requests in flight
  nor open connections can exceed it (an agent accepts 200 connections per client address);
- **deadlines**: aiohttp's default session timeout (300 s total) would cut a blocking query
  of ``wait=5m`` (Consul adds up to wait/16), so the session gets a total above the longest
  blocking query and each request its own deadline: ``wait·17/16 + request_timeout`` when
  blocking, ``request_timeout`` otherwise. ``asyncio.timeout`` cancels the request, which
  closes its connection;
- **the token we were given**: py-consul prefers ``CONSUL_HTTP_TOKEN`` from the process
  environment over its ``token`` argument, so explicit settings would silently lose; the
  client's token is set after construction;
- **errors typed** (``xds_server.consul``'s ``ConsulError``, a short ``kind`` and a one-line
  message), so the watcher can log state changes instead of stack traces;
- **untyped JSON checked once**: the shapes are verified here, the rest of the code is typed.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import aiohttp
import consul
import consul.aio

from xds_server.consul import (
    ConsulAclDenied,
    ConsulBadResponse,
    ConsulHttpError,
)
from xds_server.consul.http import (
    AsyncClient,
    blocking_deadline,
    describe,
    go_duration,
    transport_failures,
)
from xds_server.sources.consul_settings import WatcherSettings

ACL_DENIED = "Consul ACL: permission denied — check CONSUL_HTTP_TOKEN"

#: The checks watch's filter. health.mdx lists ``Status`` (Equal, Not Equal …) among the
#: selectors of ``/v1/health/state/:state``; ``ModifyIndex`` is not one, and bexpr has no
#: ``>`` (features/filtering.mdx), so "what changed since N" cannot be asked for.
NOT_PASSING = 'Status != "passing"'


class ConsulApi(AsyncClient):
    """Async context manager owning one py-consul client (one aiohttp session).

    The watch endpoints (blocking when ``index`` > 0) have reserved slots
    (``settings.blocking_slots``) so that a full resync queueing thousands of reads never holds
    up a watch's next round.
    """

    def __init__(self, settings: WatcherSettings) -> None:
        self._settings = settings
        self._consul = settings.consul
        self._wait = go_duration(settings.consul.wait)
        self._blocking_deadline = blocking_deadline(settings.consul)
        # Watches have their own slots so a burst of reads never delays a watch's next round.
        self._watch_slots = asyncio.Semaphore(settings.blocking_slots)
        self._read_slots = asyncio.Semaphore(
            settings.max_concurrent_queries - settings.blocking_slots
        )
        self._client: Any = None
        #: Requests in flight now and at most so far (instrumentation for tests and metrics).
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = 0

    async def open(self) -> None:
        self._client = self._make_client()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _make_client(self) -> Any:
        s = self._consul
        verify: bool | str = (s.ca_file or True) if s.verify else False
        cert = (s.cert_file, s.key_file) if s.cert_file else None
        with warnings.catch_warnings():
            # py-consul builds its connector with aiohttp's deprecated ssl_context/verify_ssl.
            warnings.simplefilter("ignore", DeprecationWarning)
            client = consul.aio.Consul(
                host=s.host,
                port=s.port,
                scheme=s.scheme,
                token=s.token,
                verify=verify,
                cert=cert,
                connections_limit=self._settings.max_concurrent_queries,
                connections_timeout=self._blocking_deadline + s.request_timeout,
            )
        client.token = s.token
        return client

    # -- the reads ---------------------------------------------------------------------------

    async def catalog_services(
        self, dc: str | None, index: int = 0
    ) -> tuple[int, dict[str, list[str]]]:
        """``/v1/catalog/services`` (blocking when ``index`` > 0): name → tags."""
        new_index, data = await self._call(
            lambda c: c.catalog.services(index=index or None, wait=self._wait, dc=dc),
            index > 0,
            watch=True,
        )
        if not isinstance(data, dict):
            raise ConsulBadResponse("catalog/services: expected an object")
        return new_index, {
            str(k): [t for t in (v or []) if isinstance(t, str)] for k, v in data.items()
        }

    async def checks_not_passing(
        self, dc: str | None, index: int = 0
    ) -> tuple[int, list[dict[str, Any]]]:
        """``/v1/health/state/any?filter=Status != "passing"`` (blocking when ``index`` > 0):
        the checks of ``dc`` that are not passing — usually a handful, whatever the size of
        the catalog. Its index is that of every check, so it wakes at any check write."""
        new_index, data = await self._call(
            lambda c: c.health.state(
                "any", index=index or None, wait=self._wait, dc=dc, filter_expr=NOT_PASSING
            ),
            index > 0,
            watch=True,
        )
        return new_index, self._list(data, "health/state/any")

    async def health_state(self, dc: str | None) -> tuple[int, list[dict[str, Any]]]:
        """``/v1/health/state/any``, non-blocking: every check of ``dc`` (the census the
        watcher takes only when a catalog change needs attributing, never per check change).
        """
        new_index, data = await self._call(lambda c: c.health.state("any", dc=dc), False)
        return new_index, self._list(data, "health/state/any")

    async def catalog_nodes(
        self, dc: str | None, index: int = 0
    ) -> tuple[int, list[dict[str, Any]]]:
        """``/v1/catalog/nodes`` (blocking when ``index`` > 0): every node and its address."""
        new_index, data = await self._call(
            lambda c: c.catalog.nodes(index=index or None, wait=self._wait, dc=dc),
            index > 0,
            watch=True,
        )
        return new_index, self._list(data, "catalog/nodes")

    async def health_service(self, name: str, dc: str | None) -> tuple[int, list[dict[str, Any]]]:
        """``/v1/health/service/<name>``, non-blocking: every instance with its checks."""
        new_index, data = await self._call(lambda c: c.health.service(name, dc=dc), False)
        return new_index, self._list(data, f"health/service/{name}")

    @staticmethod
    def _list(data: Any, what: str) -> list[dict[str, Any]]:
        if data is None:  # py-consul turns a 404 into None
            return []
        if not isinstance(data, list):
            raise ConsulBadResponse(f"{what}: expected a list")
        return [x for x in data if isinstance(x, dict)]

    async def _call(self, request: Any, blocking: bool, *, watch: bool = False) -> tuple[int, Any]:
        if self._client is None:
            raise RuntimeError("ConsulApi used outside its async with block")
        deadline = self._blocking_deadline if blocking else self._consul.request_timeout
        async with self._watch_slots if watch else self._read_slots:
            self.in_flight += 1
            self.requests += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                with transport_failures(self._consul.base_url, deadline):
                    raw_index, data = await self._send(request, deadline)
            finally:
                self.in_flight -= 1
        try:
            return int(raw_index), data
        except (TypeError, ValueError):
            raise ConsulBadResponse(f"invalid X-Consul-Index {raw_index!r}") from None

    async def _send(self, request: Any, deadline: float) -> tuple[Any, Any]:
        """One py-consul call, its exceptions turned into ``ConsulError``."""
        try:
            async with asyncio.timeout(deadline):
                raw_index, data = await request(self._client)
        except consul.ACLPermissionDenied as exc:
            reason = describe(exc, 80)
            message = f"{ACL_DENIED} (Consul says: {reason})" if str(exc) else ACL_DENIED
            raise ConsulAclDenied(message) from None
        except consul.ACLDisabled as exc:  # 401
            raise ConsulAclDenied(f"Consul ACL: {describe(exc)}") from None
        except consul.ConsulException as exc:
            raise ConsulHttpError(f"Consul error: {describe(exc)}") from None
        except (aiohttp.ClientError, OSError):
            raise  # for transport_failures (some of them are ValueErrors too)
        except ValueError as exc:  # e.g. a body that is not UTF-8
            raise ConsulBadResponse(f"Consul: {describe(exc)}") from None
        return raw_index, data
