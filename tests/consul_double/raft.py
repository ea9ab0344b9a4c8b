"""The per-datacenter Raft-like index and the bookkeeping of what each write touched.

Consul keeps one Raft index per datacenter, bumped by every applied write, plus finer
indexes (per table, per service name) that blocking queries compare against. The double
mirrors that: `next_index()` is one applied log entry; `touch()` records which tables and
topics changed so the server can wake exactly the blocking queries that watch them.
"""

from __future__ import annotations

__all__ = ["TABLES", "Raft", "Topic"]

Topic = tuple[str, ...]
"""What a blocking query watches, e.g. ("services",), ("svc", "web"), ("kvs",)."""

TABLES = ("nodes", "services", "checks", "kvs")


class Raft:
    def __init__(self) -> None:
        self.index = 0
        self.tables: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.touched: set[Topic] = set()
        # Bumped by reset_index(): blocking queries started before it return at once,
        # as Consul's do when a snapshot restore abandons the state store.
        self.epoch = 0

    def next_index(self) -> int:
        self.index += 1
        return self.index

    def touch_table(self, table: str, index: int) -> None:
        self.tables[table] = index
        self.touched.add((table,))

    def take_touched(self) -> set[Topic]:
        touched, self.touched = self.touched, set()
        return touched

    def clamp(self, to: int) -> None:
        self.index = to
        for table, value in self.tables.items():
            self.tables[table] = min(value, to)
        self.epoch += 1
