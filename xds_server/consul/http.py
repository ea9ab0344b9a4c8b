"""What every HTTP request to Consul shares: durations, deadlines, TLS, transport failures."""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self

import aiohttp

from xds_server.consul.errors import ConsulTimeout, ConsulTlsError, ConsulUnreachable
from xds_server.consul.settings import ConsulSettings


def go_duration(seconds: float) -> str:
    """Seconds → a Go duration string for ``wait`` (``"300s"``, ``"250ms"``; at least 1 ms)."""
    millis = max(round(seconds * 1000), 1)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def blocking_deadline(settings: ConsulSettings, wait: float | None = None) -> float:
    """The deadline of a blocking query: Consul adds up to wait/16 of jitter to ``wait``."""
    return (settings.wait if wait is None else wait) * 17 / 16 + settings.request_timeout


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe(exc: BaseException, limit: int = 200) -> str:
    """An exception in one line, its type's name if it has no message."""
    return one_line(str(exc), limit) or type(exc).__name__


def ssl_context(settings: ConsulSettings) -> ssl.SSLContext | bool:
    """For aiohttp: the context of an ``https`` Consul (CA, client certificate), else False."""
    if settings.scheme != "https":
        return False
    if settings.verify:
        context = ssl.create_default_context(cafile=settings.ca_file)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert_file and settings.key_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


@contextmanager
def transport_failures(base_url: str, deadline: float) -> Iterator[None]:
    """Turn a timeout, a TLS failure or a connection failure into the matching ConsulError."""
    try:
        yield
    except TimeoutError:
        raise ConsulTimeout(f"Consul at {base_url} did not answer in {deadline:g}s") from None
    except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
        raise ConsulTlsError(f"TLS with Consul at {base_url} failed: {describe(exc)}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConsulUnreachable(f"cannot reach Consul at {base_url}: {describe(exc)}") from None


class AsyncClient(ABC):
    """A client used as ``async with``: ``open`` on entry, ``close`` on exit."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

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
