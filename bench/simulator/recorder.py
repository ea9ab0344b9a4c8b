"""What a worker's proxies received, kept compactly for the parent's questions.

Outside a recording window only per-proxy totals are kept. Inside one, every received
resource is logged as (proxy, receive time, ACK time) under its (type, name), in three flat
arrays per resource, so 3,000 changes x 1,000 proxies stay a few tens of megabytes; the
per-response sizes are logged too (for bytes per change and resources per response).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Occurrences:
    proxies: array[int] = field(default_factory=lambda: array("i"))
    received: array[float] = field(default_factory=lambda: array("d"))
    acked: array[float] = field(default_factory=lambda: array("d"))


@dataclass(slots=True)
class WindowTotals:
    """Per (proxy, type) inside the window: responses, bytes, resources, most in one."""

    responses: int = 0
    bytes: int = 0
    resources: int = 0
    max_resources: int = 0


class Recorder:
    def __init__(self) -> None:
        self.active = False
        self._occurrences: dict[tuple[str, str], _Occurrences] = {}
        self._totals: dict[tuple[int, str], WindowTotals] = {}

    def start(self) -> None:
        self._occurrences.clear()
        self._totals.clear()
        self.active = True

    def stop(self) -> None:
        self.active = False

    def response(
        self,
        proxy: int,
        type_short: str,
        names: Iterable[str],
        received: float,
        acked: float,
        size: int,
    ) -> None:
        if not self.active:
            return
        count = 0
        for name in names:
            count += 1
            occ = self._occurrences.get((type_short, name))
            if occ is None:
                occ = self._occurrences[(type_short, name)] = _Occurrences()
            occ.proxies.append(proxy)
            occ.received.append(received)
            occ.acked.append(acked)
        totals = self._totals.get((proxy, type_short))
        if totals is None:
            totals = self._totals[(proxy, type_short)] = WindowTotals()
        totals.responses += 1
        totals.bytes += size
        totals.resources += count
        totals.max_resources = max(totals.max_resources, count)

    def latencies(
        self, changes: Sequence[tuple[str, str, float]], proxies: Sequence[int]
    ) -> list[tuple[list[float], list[float]]]:
        """Per change (type, name, time): each proxy's ACK latency of the first copy of that
        resource received after the change, and the same for the receive time. Proxies
        that have not received one are absent (the caller counts them)."""
        wanted = set(proxies)
        out: list[tuple[list[float], list[float]]] = []
        for type_short, name, at in changes:
            occ = self._occurrences.get((type_short, name))
            acks: dict[int, float] = {}
            recvs: dict[int, float] = {}
            if occ is not None:
                for i in range(len(occ.proxies)):
                    received = occ.received[i]
                    if received <= at:
                        continue
                    proxy = occ.proxies[i]
                    if proxy in acks or proxy not in wanted:
                        continue
                    acks[proxy] = occ.acked[i] - at
                    recvs[proxy] = received - at
            out.append((list(acks.values()), list(recvs.values())))
        return out

    def totals(self) -> dict[str, list[tuple[int, int, int, int, int]]]:
        """Per type: (proxy, responses, bytes, resources, max resources in one response)."""
        out: dict[str, list[tuple[int, int, int, int, int]]] = {}
        for (proxy, type_short), t in self._totals.items():
            out.setdefault(type_short, []).append(
                (proxy, t.responses, t.bytes, t.resources, t.max_resources)
            )
        return out
