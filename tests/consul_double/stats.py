"""Instrumentation: request counts, response bytes, in-flight and connection high-water marks,
tokens seen.

All mutation happens under the double's lock (see core.Core); readers take the same lock.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

__all__ = ["RecordedRequest", "Stats"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    token: str | None
    client: str

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None

    def params(self, name: str) -> list[str]:
        return [value for key, value in self.query if key == name]


@dataclass
class Stats:
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, path)
    #: Response body bytes by path (what a client reads and parses, headers left out).
    bytes_sent: Counter[str] = field(default_factory=Counter)
    requests: deque[RecordedRequest] = field(default_factory=lambda: deque(maxlen=100_000))
    tokens_seen: Counter[str | None] = field(default_factory=Counter)
    inflight: int = 0
    max_inflight: int = 0
    inflight_by_client: Counter[str] = field(default_factory=Counter)
    max_inflight_by_client: dict[str, int] = field(default_factory=dict)
    inflight_by_path: Counter[str] = field(default_factory=Counter)
    blocked_by_path: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    max_connections: int = 0
    connections_by_client: Counter[str] = field(default_factory=Counter)
    max_connections_by_client: dict[str, int] = field(default_factory=dict)
    total_connections: int = 0
    rejected_connections: int = 0

    def request_started(self, req: RecordedRequest) -> None:
        self.counts[(req.method, req.path)] += 1
        self.requests.append(req)
        self.tokens_seen[req.token] += 1
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        self.inflight_by_client[req.client] += 1
        self.max_inflight_by_client[req.client] = max(
            self.max_inflight_by_client.get(req.client, 0), self.inflight_by_client[req.client]
        )
        self.inflight_by_path[req.path] += 1

    def request_finished(self, req: RecordedRequest) -> None:
        self.inflight -= 1
        self.inflight_by_client[req.client] -= 1
        if self.inflight_by_client[req.client] <= 0:
            del self.inflight_by_client[req.client]
        self.inflight_by_path[req.path] -= 1
        if self.inflight_by_path[req.path] <= 0:
            del self.inflight_by_path[req.path]

    def connection_opened(self, client: str) -> None:
        self.total_connections += 1
        self.connections += 1
        self.max_connections = max(self.max_connections, self.connections)
        self.connections_by_client[client] += 1
        self.max_connections_by_client[client] = max(
            self.max_connections_by_client.get(client, 0), self.connections_by_client[client]
        )

    def connection_closed(self, client: str) -> None:
        self.connections -= 1
        self.connections_by_client[client] -= 1
        if self.connections_by_client[client] <= 0:
            del self.connections_by_client[client]

    def response_sent(self, req: RecordedRequest, body_bytes: int) -> None:
        self.bytes_sent[req.path] += body_bytes

    def bytes_for(self, path_prefix: str = "") -> int:
        return sum(n for path, n in self.bytes_sent.items() if path.startswith(path_prefix))

    def count(self, path_prefix: str = "", method: str | None = None) -> int:
        return sum(
            n
            for (m, path), n in self.counts.items()
            if path.startswith(path_prefix) and (method is None or m == method.upper())
        )

    def reset(self) -> None:
        """Forget counts and high-water marks; current in-flight/connection levels stay."""
        self.counts.clear()
        self.bytes_sent.clear()
        self.requests.clear()
        self.tokens_seen.clear()
        self.max_inflight = self.inflight
        self.max_inflight_by_client = dict(self.inflight_by_client)
        self.max_connections = self.connections
        self.max_connections_by_client = dict(self.connections_by_client)
        self.total_connections = self.connections
        self.rejected_connections = 0
