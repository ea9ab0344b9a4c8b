"""One commit as one ``/v1/txn``: the operations, and whether a commit whose answer was lost
was applied.

The transaction replaces ``PREFIX/revision`` with ``cas`` on the ModifyIndex this replica last
saw, in the same transaction as the documents and the history, so of two replicas committing on
the same revision exactly one wins; the other's transaction fails whole. It also deletes the
revision of history that falls out of the limit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xds_server.consul import ConsulKv, kv_op
from xds_server.store.consul_kv.calls import txn
from xds_server.store.consul_kv.keys import KeyLayout
from xds_server.store.consul_kv.records import Logged, chunks, document_value, dumps, loads
from xds_server.store.errors import InvalidChange, StoreError
from xds_server.store.planning import Planned


@dataclass(frozen=True, slots=True)
class Limits:
    """What one commit may take: operations and bytes of a transaction, revisions kept."""

    max_txn_ops: int
    max_txn_bytes: int
    history_limit: int


def write_ops(
    layout: KeyLayout,
    planned: Planned,
    logged: Sequence[Logged],
    commit: str,
    rev_index: int,
    limits: Limits,
) -> list[Any]:
    revision = planned.state.revision
    time = planned.entries[0].time
    meta = dumps({"revision": revision, "commit": commit, "time": time})
    ops: list[Any] = [kv_op("cas", layout.revision, meta, index=rev_index)]
    for doc in planned.upserts:
        ops.append(kv_op("set", layout.doc(doc.kind, doc.name), document_value(doc)))
    for kind, name in planned.deletes:
        ops.append(kv_op("delete", layout.doc(kind, name)))
    for number, chunk in enumerate(chunks(logged)):
        value = dumps({"revision": revision, "commit": commit, "entries": chunk})
        ops.append(kv_op("set", layout.chunk(revision, number), value))
    if revision - limits.history_limit >= 1:
        ops.append(kv_op("delete-tree", layout.history_of(revision - limits.history_limit)))
    size = len(json.dumps(ops, separators=(",", ":")))
    if size > limits.max_txn_bytes:
        raise InvalidChange(
            f"this commit needs a {size}-byte Consul transaction; Consul accepts"
            f" {limits.max_txn_bytes} (txn_max_req_len): split it into smaller commits"
        )
    return ops


async def confirm(
    kv: ConsulKv, layout: KeyLayout, revision: int, commit: str, max_ops: int
) -> tuple[bool, int]:
    """Whether the commit ``commit`` (revision ``revision``) is in Consul KV, and the
    revision key's ModifyIndex if it is still ours (0: unknown, the next commit catches
    up first)."""
    ops = [kv_op("get-tree", layout.revision), kv_op("get-tree", layout.history_of(revision))]
    try:
        outcome = await txn(kv, ops, max_ops)
    except StoreError:
        return False, 0
    if not outcome.ok:
        return False, 0
    applied, rev_index = False, 0
    for entry in outcome.entries:
        if loads(entry).get("commit") == commit:
            applied = True
            if entry.key == layout.revision:
                rev_index = entry.modify_index
    return applied, rev_index
