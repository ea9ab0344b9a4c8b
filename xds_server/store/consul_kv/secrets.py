"""The secret side channel in Consul KV: ``PREFIX/secrets/<key>``, one raw value each.

Not part of the config: no revision, no history chunk, never in a commit's transaction. "If
absent" is Consul's ``cas`` with index 0 (set only when the key does not exist), so of several
replicas generating a value at once exactly one stores it and every one reads the winner's.
"""

from __future__ import annotations

from xds_server.consul import MAX_VALUE_SIZE, ConsulKv, kv_op
from xds_server.store.consul_kv.calls import get, txn
from xds_server.store.consul_kv.keys import KeyLayout
from xds_server.store.errors import InvalidChange, StoreError, StoreUnavailable

#: A lost race whose winner was deleted before we could read it: try again this often.
_ATTEMPTS = 3


def _encode(key: str, value: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > MAX_VALUE_SIZE:
        raise InvalidChange(f"secret {key} is {len(data)} bytes; Consul KV holds {MAX_VALUE_SIZE}")
    return data


async def get_secret(kv: ConsulKv, layout: KeyLayout, key: str) -> str | None:
    _, entry = await get(kv, layout.secret(key), 0)
    if entry is None or entry.value is None:
        return None
    try:
        return entry.value.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreError(f"Consul KV {layout.secret(key)}: not UTF-8 text") from None


async def put_secret(
    kv: ConsulKv, layout: KeyLayout, key: str, value: str, max_ops: int, *, if_absent: bool
) -> str:
    data = _encode(key, value)
    path = layout.secret(key)
    if not if_absent:
        outcome = await txn(kv, [kv_op("set", path, data)], max_ops)
        if not outcome.ok:
            raise StoreUnavailable(f"Consul refused to write {path}: {outcome.errors}")
        return value
    for _ in range(_ATTEMPTS):
        outcome = await txn(kv, [kv_op("cas", path, data, index=0)], max_ops)
        if outcome.ok:
            return value
        stored = await get_secret(kv, layout, key)  # another replica stored it first
        if stored is not None:
            return stored
    raise StoreUnavailable(f"could not store {path}: it keeps being written and deleted")


async def all_secrets(kv: ConsulKv, layout: KeyLayout, max_ops: int) -> dict[str, str]:
    outcome = await txn(kv, [kv_op("get-tree", layout.secrets)], max_ops)
    if not outcome.ok:
        raise StoreUnavailable(f"Consul refused a read of {layout.secrets}: {outcome.errors}")
    found: dict[str, str] = {}
    for entry in sorted(outcome.entries, key=lambda e: e.key):
        if entry.value is not None:
            found[entry.key.removeprefix(layout.secrets)] = entry.value.decode("utf-8", "replace")
    return found
