"""Durable, versioned operator config: ``ConfigStore`` and its implementations."""

from xds_server.store.errors import (
    InvalidChange,
    NotFound,
    PreconditionFailed,
    RevisionNotFound,
    StoreError,
    StoreUnavailable,
)
from xds_server.store.interface import (
    Change,
    CommitResult,
    ConfigState,
    ConfigStore,
    DocKey,
    Document,
    HistoryEntry,
    Operation,
    Spec,
    etag_of,
)
from xds_server.store.memory import MemoryStore
from xds_server.store.sqlite import SqliteStore

__all__ = [
    "Change",
    "CommitResult",
    "ConfigState",
    "ConfigStore",
    "DocKey",
    "Document",
    "HistoryEntry",
    "InvalidChange",
    "MemoryStore",
    "NotFound",
    "Operation",
    "PreconditionFailed",
    "RevisionNotFound",
    "Spec",
    "SqliteStore",
    "StoreError",
    "StoreUnavailable",
    "etag_of",
]
