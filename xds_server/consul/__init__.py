"""The one Consul client layer, shared by the Consul source and the Consul KV store.

Settings from Consul's own variables (:class:`ConsulSettings`), what every request shares
(``http``), the KV calls (:class:`ConsulKv`), pacing of watch loops (:class:`TokenBucket`,
:class:`Backoff`) and one hierarchy of failures (:class:`ConsulError`).
"""

from xds_server.consul.errors import (
    ConsulAclDenied,
    ConsulBadResponse,
    ConsulError,
    ConsulHttpError,
    ConsulTimeout,
    ConsulTlsError,
    ConsulTooLarge,
    ConsulUnreachable,
)
from xds_server.consul.http import go_duration
from xds_server.consul.kv import MAX_TXN_OPS, MAX_VALUE_SIZE, ConsulKv, KvEntry, TxnOutcome, kv_op
from xds_server.consul.pacing import Backoff, TokenBucket
from xds_server.consul.settings import ConsulSettings, parse_address

__all__ = [
    "MAX_TXN_OPS",
    "MAX_VALUE_SIZE",
    "Backoff",
    "ConsulAclDenied",
    "ConsulBadResponse",
    "ConsulError",
    "ConsulHttpError",
    "ConsulKv",
    "ConsulSettings",
    "ConsulTimeout",
    "ConsulTlsError",
    "ConsulTooLarge",
    "ConsulUnreachable",
    "KvEntry",
    "TokenBucket",
    "TxnOutcome",
    "go_duration",
    "kv_op",
    "parse_address",
]
