"""The Consul KV calls as the store sees them: failures become store errors, reads snapshots.

Anything that means "Consul cannot answer now" (refused, timeout, TLS, 5xx, no leader, ACL
denied) is :class:`StoreUnavailable` with a one-line reason; a request Consul refuses as too
large is :class:`InvalidChange`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from xds_server.consul import ConsulError, ConsulKv, ConsulTooLarge, KvEntry, TxnOutcome, kv_op
from xds_server.store.consul_kv.keys import KeyLayout
from xds_server.store.consul_kv.records import KvSnapshot, parse
from xds_server.store.errors import InvalidChange, StoreUnavailable


@contextmanager
def store_errors() -> Iterator[None]:
    try:
        yield
    except ConsulTooLarge as error:
        raise InvalidChange(str(error)) from None
    except ConsulError as error:
        raise StoreUnavailable(str(error)) from None


async def txn(kv: ConsulKv, ops: Sequence[Any], max_ops: int) -> TxnOutcome:
    """``/v1/txn``; a change of more than ``max_ops`` operations is refused before sending."""
    if len(ops) > max_ops:
        raise InvalidChange(
            f"one change to Consul KV would take {len(ops)} operations; a Consul"
            f" transaction allows {max_ops}: split it into smaller commits"
        )
    with store_errors():
        return await kv.txn(ops)


async def get(kv: ConsulKv, key: str, index: int) -> tuple[int, KvEntry | None]:
    with store_errors():
        return await kv.get(key, index=index)


async def read(kv: ConsulKv, layout: KeyLayout, ops: Sequence[Any], max_ops: int) -> KvSnapshot:
    """One read-only transaction of ``get-tree`` operations."""
    outcome = await txn(kv, ops, max_ops)
    if not outcome.ok:
        raise StoreUnavailable(f"Consul refused a read of {layout.prefix}: {outcome.errors}")
    return parse(layout, outcome.entries)


async def read_all(kv: ConsulKv, layout: KeyLayout, max_ops: int) -> KvSnapshot:
    return await read(kv, layout, [kv_op("get-tree", layout.tree)], max_ops)
