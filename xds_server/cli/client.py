"""The REST API as the command line uses it: requests, and errors as one clear message.

Standard library HTTP only (the command needs nothing the server does not already have).
Every failure becomes a :class:`CliError` whose lines the command prints to stderr before
exiting non-zero: problem details as ``field: reason`` lines, an unreachable server as one
line naming the URL.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

PROBLEM_JSON: Final = "application/problem+json"
DEFAULT_SERVER: Final = "http://127.0.0.1:8080"


class CliError(Exception):
    """What went wrong, ready to print; ``code`` is the exit code."""

    def __init__(self, lines: list[str], code: int = 1) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        self.code = code


def error_item_line(error: Mapping[str, Any]) -> str:
    """``[2] Route/web spec.rules[0].path.regex: reason (line 3, column 5)``."""
    parts = []
    if error.get("index") is not None:
        parts.append(f"[{error['index']}]")
    if error.get("kind") and error.get("name"):
        parts.append(f"{error['kind']}/{error['name']}")
    where = str(error.get("field") or "body")
    text = f"{where}: {error.get('reason', '')}"
    if error.get("line") is not None:
        text += f" (line {error['line']}, column {error.get('column', '?')})"
    parts.append(text)
    return " ".join(parts)


def problem_lines(problem: Mapping[str, Any], status: int) -> list[str]:
    title = problem.get("title") or f"HTTP {status}"
    lines = [f"error: {title} ({status}): {problem.get('detail', '')}".rstrip(": ")]
    for error in problem.get("errors") or []:
        if isinstance(error, Mapping):
            lines.append("  " + error_item_line(error))
    return lines


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    #: Names in lower case.
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class ApiClient:
    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        params = {
            key: str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in (query or {}).items()
            if value is not None
        }
        suffix = "?" + urllib.parse.urlencode(params) if params else ""
        return self.server + path + suffix

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Answer:
        """Send a request; a 4xx/5xx answer or a transport failure raises ``CliError``."""
        with self._open(method, path, query, body, content_type) as response:
            headers = {name.lower(): value for name, value in response.headers.items()}
            return Answer(response.status, headers, response.read())

    def lines(
        self, path: str, query: Mapping[str, Any] | None = None, read_timeout: float = 60.0
    ) -> Iterator[str]:
        """The lines of a streamed answer (an event stream), as they arrive."""
        with self._open("GET", path, query, None, "", read_timeout) as response:
            try:
                for raw in response:
                    yield raw.decode("utf-8", errors="replace").rstrip("\r\n")
            except OSError as error:
                raise self._unreachable(error) from None

    @contextmanager
    def _open(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: bytes | None,
        content_type: str,
        timeout: float | None = None,
    ) -> Iterator[Any]:
        if not self.server.startswith(("http://", "https://")):
            raise CliError(
                [f"error: --server {self.server!r} is not an http:// or https:// URL"], code=2
            )
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.url(path, query), data=body, method=method, headers=headers
        )
        try:
            response = urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as error:
            raise self._http_error(error) from None
        except (urllib.error.URLError, OSError) as error:
            raise self._unreachable(error) from None
        except ValueError as error:  # a bad port …
            raise CliError(
                [f"error: --server {self.server!r} is not a usable http(s) URL: {error}"], code=2
            ) from None
        with response:
            yield response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def _http_error(self, error: urllib.error.HTTPError) -> CliError:
        raw = error.read()
        media = (error.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        status = error.code
        if media in (PROBLEM_JSON, "application/json"):
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = None
            if isinstance(problem, Mapping):
                lines = problem_lines(problem, status)
                if status in (401, 403):
                    lines.append("  (send a token with --token or XDS_SERVER_TOKEN)")
                return CliError(lines)
        text = raw.decode(errors="replace").strip().splitlines()
        first = text[0][:200] if text else (error.reason or "")
        return CliError([f"error: HTTP {status} from {self.server}: {first}".rstrip(": ")])

    def _unreachable(self, error: Exception) -> CliError:
        reason: Any = getattr(error, "reason", error)
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, TimeoutError | socket.timeout):
            why = f"no answer within {self.timeout:g}s"
        elif isinstance(reason, socket.gaierror):
            why = f"unknown host ({reason.strerror})"
        else:
            why = str(reason) or type(reason).__name__
        return CliError(
            [
                f"error: cannot reach the xds-server at {self.server}: {why} "
                "(is it running? set --server or XDS_SERVER_URL)"
            ]
        )
