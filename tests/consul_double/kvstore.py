"""One datacenter's KV store and the KV part of /v1/txn, with Consul's index rules.

- An entry keeps CreateIndex from its first write; every write sets ModifyIndex (even when the
  value is unchanged: Consul does not compare values).
- Deletes leave a tombstone carrying the delete's index, so a recursive read of a prefix whose
  newest key was deleted still moves forward (Consul's graveyard).
- Reading a missing key answers the table index (max of kvs and tombstones); a recursive read
  answers the max ModifyIndex/tombstone index under the prefix, or the table index if that is 0.
- cas on PUT: 0 means "only if absent", N means "only if ModifyIndex == N". cas on DELETE: a
  missing key succeeds; otherwise ModifyIndex must equal N (so 0 never deletes).
- Locks (``?acquire=``/``?release=``, txn ``lock``/``unlock``/``check-session``) follow the
  session rules in ``sessionstore``; an invalidated session releases or deletes its keys.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from .decode import ConsulError, field
from .raft import Raft
from .sessionstore import Session, SessionTable

__all__ = ["MAX_TXN_OPS", "MAX_VALUE_SIZE", "KVEntry", "KVStore"]

MAX_VALUE_SIZE = 512 * 1024
MAX_TXN_OPS = 128


@dataclass
class KVEntry:
    key: str
    value: bytes | None
    flags: int = 0
    lock_index: int = 0
    session: str = ""
    create_index: int = 0
    modify_index: int = 0

    def to_json(self, with_value: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "LockIndex": self.lock_index,
            "Key": self.key,
            "Flags": self.flags,
            "Value": base64.b64encode(self.value).decode("ascii")
            if with_value and self.value is not None
            else None,
        }
        if self.session:  # `json:",omitempty"` in Consul's DirEntry
            out["Session"] = self.session
        return out


def _quote(key: str) -> str:
    return json.dumps(key)  # close to Go's %q


class _TxnFailed(Exception):
    pass


class KVStore:
    def __init__(self, raft: Raft) -> None:
        self.raft = raft
        self.entries: dict[str, KVEntry] = {}
        self.tombstones: dict[str, int] = {}
        self.sessions = SessionTable()
        #: The keys of each write (a PUT, DELETE or write transaction), newest last; for
        #: tests and benchmarks that count writes under a prefix.
        self.write_log: deque[tuple[str, ...]] = deque(maxlen=100_000)

    # -- reads ------------------------------------------------------------------------------

    def table_index(self) -> int:
        return self.raft.tables["kvs"]

    def get(self, key: str) -> KVEntry | None:
        return self.entries.get(key)

    def key_index(self, key: str) -> int:
        entry = self.entries.get(key)
        return entry.modify_index if entry is not None else self.table_index()

    def list_prefix(self, prefix: str) -> list[KVEntry]:
        return [self.entries[k] for k in sorted(self.entries) if k.startswith(prefix)]

    def list_index(self, prefix: str) -> int:
        if prefix == "":
            return self.table_index()
        idx = max((e.modify_index for e in self.list_prefix(prefix)), default=0)
        graves = (i for k, i in self.tombstones.items() if k.startswith(prefix))
        idx = max(idx, max(graves, default=0))
        return idx or self.table_index()

    def keys(self, prefix: str, separator: str) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        for key in sorted(self.entries):
            if not key.startswith(prefix):
                continue
            if separator:
                cut = key.find(separator, len(prefix))
                if cut >= 0:
                    key = key[: cut + len(separator)]
            if key not in seen:
                seen.add(key)
                out.append(key)
        return out

    # -- writes -----------------------------------------------------------------------------

    def set(self, index: int, key: str, value: bytes | None, flags: int = 0) -> KVEntry:
        existing = self.entries.get(key)
        if existing is not None:
            entry = dataclasses.replace(existing, value=value, flags=flags, modify_index=index)
        else:
            entry = KVEntry(key, value, flags, create_index=index, modify_index=index)
        self.entries[key] = entry
        self.tombstones.pop(key, None)
        self.raft.touch_table("kvs", index)
        return entry

    def cas(self, index: int, key: str, value: bytes | None, flags: int, cas: int) -> bool:
        existing = self.entries.get(key)
        if existing is None and cas != 0:
            return False
        if existing is not None and existing.modify_index != cas:
            return False
        self.set(index, key, value, flags)
        return True

    def delete(self, index: int, key: str) -> None:
        if self.entries.pop(key, None) is not None:
            self.tombstones[key] = index
            self.raft.touch_table("kvs", index)

    def delete_tree(self, index: int, prefix: str) -> None:
        for key in [k for k in self.entries if k.startswith(prefix)]:
            self.delete(index, key)

    def delete_cas(self, index: int, key: str, cas: int) -> bool:
        existing = self.entries.get(key)
        if existing is None:
            return True
        if existing.modify_index != cas:
            return False
        self.delete(index, key)
        return True

    # -- locks (sessions) ---------------------------------------------------------------------

    def acquire(
        self, index: int, key: str, value: bytes | None, flags: int, session_id: str
    ) -> bool:
        """``PUT ?acquire=``: take (or, as holder, update) the key's lock."""
        self.sessions.require(session_id)
        existing = self.entries.get(key)
        if existing is not None and existing.session == session_id:
            self.set(index, key, value, flags)
            return True
        if existing is not None and existing.session:
            return False
        if self.sessions.lock_delayed(key):
            return False
        entry = self.set(index, key, value, flags)
        lock_index = (existing.lock_index if existing is not None else 0) + 1
        self.entries[key] = dataclasses.replace(entry, session=session_id, lock_index=lock_index)
        return True

    def release(
        self, index: int, key: str, value: bytes | None, flags: int, session_id: str
    ) -> bool:
        """``PUT ?release=``: give the lock up (only its holder can)."""
        self.sessions.require(session_id)
        existing = self.entries.get(key)
        if existing is None or existing.session != session_id:
            return False
        entry = self.set(index, key, value, flags)
        self.entries[key] = dataclasses.replace(entry, session="")
        return True

    def held_by(self, session_id: str) -> list[str]:
        return [k for k in sorted(self.entries) if self.entries[k].session == session_id]

    def invalidate(self, index: int, session: Session) -> None:
        """Destroy or expiry: release or delete (``Behavior``) every key ``session`` holds."""
        held = self.held_by(session.id)
        for key in held:
            if session.behavior == "delete":
                self.delete(index, key)
            else:
                entry = self.entries[key]
                self.entries[key] = dataclasses.replace(entry, session="", modify_index=index)
                self.raft.touch_table("kvs", index)
        self.sessions.remove(session, held)
        self.raft.touch_table("sessions", index)

    def clamp_indexes(self, to: int) -> None:
        for key, entry in self.entries.items():
            self.entries[key] = dataclasses.replace(
                entry,
                create_index=min(entry.create_index, to),
                modify_index=min(entry.modify_index, to),
            )
        for key, value in self.tombstones.items():
            self.tombstones[key] = min(value, to)

    # -- transactions -----------------------------------------------------------------------

    _WRITE_VERBS = frozenset(
        {"set", "cas", "lock", "unlock", "delete", "delete-tree", "delete-cas"}
    )

    def txn(self, ops: list[Any]) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]:
        """Apply KV operations atomically: (results, []) or (None, errors) after a rollback."""
        parsed = [self._parse_op(i, op) for i, op in enumerate(ops)]
        writes = any(op["Verb"] in self._WRITE_VERBS for op in parsed)
        if writes:
            self.write_log.append(tuple(op["Key"] for op in parsed))
        index = self.raft.next_index() if writes else self.raft.index
        saved = (dict(self.entries), dict(self.tombstones), dict(self.raft.tables))
        saved_touched = set(self.raft.touched)
        results: list[dict[str, Any]] = []
        for i, op in enumerate(parsed):
            try:
                results.extend({"KV": entry} for entry in self._apply(index, op))
            except _TxnFailed as exc:
                self.entries, self.tombstones = saved[0], saved[1]
                self.raft.tables = saved[2]
                self.raft.touched = saved_touched
                return None, [{"OpIndex": i, "What": str(exc)}]
        return results, []

    @staticmethod
    def _parse_op(i: int, op: Any) -> dict[str, Any]:
        if not isinstance(op, dict):
            raise ConsulError(400, f"Failed to parse body: operation {i} is not an object")
        kv = field(op, "KV")
        if kv is None:
            kinds = ", ".join(sorted(op)) or "empty"
            raise ConsulError(
                500, f"consul double: only KV transaction operations are implemented (got {kinds})"
            )
        raw = field(kv, "Value")
        value: bytes | None = None
        if raw is not None:
            try:
                value = base64.b64decode(str(raw), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConsulError(400, f"Failed to parse body: illegal base64 data: {exc}") from exc
            if len(value) > MAX_VALUE_SIZE:
                raise ConsulError(413, f"Value for key {_quote(field(kv, 'Key', ''))} is too large")
        return {
            "Verb": str(field(kv, "Verb", "")),
            "Key": str(field(kv, "Key", "")),
            "Value": value,
            "Flags": int(field(kv, "Flags", 0) or 0),
            "Index": int(field(kv, "Index", 0) or 0),
            "Session": str(field(kv, "Session", "") or ""),
        }

    def _apply(self, index: int, op: dict[str, Any]) -> list[dict[str, Any]]:
        verb, key = op["Verb"], op["Key"]
        if verb == "set":
            return [self.set(index, key, op["Value"], op["Flags"]).to_json(with_value=False)]
        if verb == "cas":
            if not self.cas(index, key, op["Value"], op["Flags"], op["Index"]):
                raise _TxnFailed(f"failed to set key {_quote(key)}, index is stale")
            return [self.entries[key].to_json(with_value=False)]
        if verb in ("lock", "unlock", "check-session"):
            return self._apply_lock(index, op)
        if verb in ("get", "get-or-empty"):
            entry = self.entries.get(key)
            if entry is None:
                if verb == "get-or-empty":
                    return []
                raise _TxnFailed(f"key {_quote(key)} doesn't exist")
            return [entry.to_json()]
        if verb == "get-tree":
            return [e.to_json() for e in self.list_prefix(key)]
        if verb == "check-index":
            entry = self.entries.get(key)
            if entry is None:
                raise _TxnFailed(f"key {_quote(key)} doesn't exist")
            if entry.modify_index != op["Index"]:
                raise _TxnFailed(f"current modify index {entry.modify_index} != {op['Index']}")
            return [entry.to_json(with_value=False)]
        if verb == "check-not-exists":
            if key in self.entries:
                raise _TxnFailed(f"key {_quote(key)} exists")
            return []
        if verb == "delete":
            self.delete(index, key)
            return []
        if verb == "delete-tree":
            self.delete_tree(index, key)
            return []
        if verb == "delete-cas":
            if not self.delete_cas(index, key, op["Index"]):
                raise _TxnFailed(f"failed to delete key {_quote(key)}, index is stale")
            return []
        raise _TxnFailed(f"unknown KV verb {_quote(verb)}")

    def _apply_lock(self, index: int, op: dict[str, Any]) -> list[dict[str, Any]]:
        verb, key, session = op["Verb"], op["Key"], op["Session"]
        if self.sessions.get(session) is None:
            raise _TxnFailed(f"invalid session {_quote(session)}")
        if verb == "lock":
            if not self.acquire(index, key, op["Value"], op["Flags"], session):
                raise _TxnFailed(f"failed to lock key {_quote(key)}, lock is already held")
            return [self.entries[key].to_json(with_value=False)]
        if verb == "unlock":
            if not self.release(index, key, op["Value"], op["Flags"], session):
                raise _TxnFailed(
                    f"failed to unlock key {_quote(key)}, lock isn't held, or is held by "
                    "another session"
                )
            return [self.entries[key].to_json(with_value=False)]
        entry = self.entries.get(key)
        if entry is None:
            raise _TxnFailed(f"key {_quote(key)} doesn't exist")
        if entry.session != session:
            raise _TxnFailed(
                f"failed session check for key {_quote(key)}, current session "
                f"{_quote(entry.session)} != {_quote(session)}"
            )
        return [entry.to_json(with_value=False)]
