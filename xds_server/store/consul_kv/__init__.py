"""``--store consul-kv:PREFIX``: the config in Consul KV, shared by every replica.

One job per module: ``keys`` (the layout), ``records`` (the values), ``writing`` (a commit as
one transaction), ``following`` (the other replicas' commits), ``history`` (what a replica
keeps in memory), ``calls`` (Consul's failures as store errors), ``secrets`` (the secret side
channel), ``store`` (the store itself).

Layout under ``PREFIX`` (values are JSON):

- ``PREFIX/revision``: ``{"revision": N, "commit": ID, "time": …}``, the config revision. Every
  commit replaces it with ``cas`` on the ModifyIndex this replica last saw, in the same
  ``/v1/txn`` as the documents and the history, so of two replicas committing on the same
  revision exactly one wins; the other's transaction fails whole, it catches up and re-plans
  (a precondition that no longer holds is then :class:`PreconditionFailed`, HTTP 412).
- ``PREFIX/docs/<kind>/<name>`` (kind and name percent-encoded): one document each.
- ``PREFIX/history/<revision, 20 digits>/<chunk>``: the revision's history entries, each with
  the document's previous revision, age and time so that older states can be rebuilt backwards
  from the current one. Only the last ``history_limit`` revisions are kept: each commit deletes
  the one that falls out, in the same transaction.

- ``PREFIX/secrets/<key>``: the secret side channel (the mesh CA's root): raw values written
  outside commits (``cas`` 0 for "if absent"), never in history or an export by default.

Every replica follows ``PREFIX/revision`` with a blocking query; when another replica commits,
it reads the new documents and the missing history in one read-only transaction and publishes
the new state, so ``watch()`` yields it on every replica.

Faults: when Consul cannot be reached (refused, timeout, 5xx, no leader, ACL denied) a commit
raises :class:`StoreUnavailable` and nothing was written (a transaction is atomic); ``current()``,
``history()`` and ``state_at()`` are served from memory and keep answering with the last known
config. The watch backs off with jitter and catches up once Consul is back. A commit whose
answer was lost (a timeout after sending) is confirmed by reading its revision back before it
is reported as failed.

A commit is one transaction: at most ``max_txn_ops`` operations (Consul's default is 128:
one per changed document, one per history chunk, plus two) and ``max_txn_bytes`` of request
(Consul's ``txn_max_req_len``, 512 KiB by default); a bigger commit is refused whole with
:class:`InvalidChange` (split it).
"""

from xds_server.store.consul_kv.history import HistoryPruned
from xds_server.store.consul_kv.keys import normalise_prefix
from xds_server.store.consul_kv.store import (
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_MAX_TXN_BYTES,
    ConsulKvSettings,
    ConsulKvStore,
)

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "DEFAULT_MAX_TXN_BYTES",
    "ConsulKvSettings",
    "ConsulKvStore",
    "HistoryPruned",
    "normalise_prefix",
]
