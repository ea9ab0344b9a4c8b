"""The one redaction of secrets in what the server shows about the resources it serves.

CSDS (``server/csds.py``) and ``GET /v1/proxies/{id}/config`` (``admin/``) both show what a
proxy was sent; neither may show a private key, since whoever reads status is not necessarily
the proxy the key was meant for. Both go through :func:`redacted_body`, so they hide the same
things, the way Envoy's own ``/config_dump`` does:

- a field named ``private_key``, ``password``, ``session_ticket_keys``, ``generic_secret`` or
  ``private_key_provider``, wherever it appears (also inside an ``Any``, such as a TLS context
  in a transport socket): every ``DataSource`` in it reads ``inline_string: "[redacted]"`` and
  every ``Any`` in it is emptied (a key provider's configuration may hold key material);
- any ``DataSource`` holding ``inline_bytes``: bytes cannot be told apart from a key, so they
  are never shown (PEM the server writes itself is ``inline_string``).

Names, structure and everything else stay, so a reader still sees *that* a key is there.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from envoy.config.core.v3 import base_pb2
from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message

REDACTED: Final = "[redacted]"
#: Fields whose whole value is secret, wherever they appear in a resource.
SECRET_FIELDS: Final = frozenset(
    {"private_key", "password", "session_ticket_keys", "generic_secret", "private_key_provider"}
)
_DATA_SOURCE: Final = base_pb2.DataSource.DESCRIPTOR.full_name
_ANY: Final = any_pb2.Any.DESCRIPTOR.full_name
_symbols = symbol_database.Default()


def redact(message: Message) -> bool:
    """Redact ``message`` in place; whether anything was changed."""
    return _walk(message, inside_secret=False)


@lru_cache(maxsize=256)
def redacted_body(type_url: str, body: bytes) -> bytes:
    """A serialised resource with its secrets redacted (the same bytes when it has none).

    Memoised: a resource's bytes are shared by every stream, and CSDS asks for the same ones
    once per proxy.
    """
    message = _decode(type_url.rpartition("/")[2], body)
    if message is None or not redact(message):
        return body
    return bytes(message.SerializeToString(deterministic=True))


def _decode(type_name: str, body: bytes) -> Message | None:
    try:
        prototype: Any = _symbols.GetSymbol(type_name)
    except KeyError:
        return None  # a type this process does not know holds nothing we wrote
    message: Message = prototype.FromString(body)
    return message


def _walk(message: Message, *, inside_secret: bool) -> bool:
    name = message.DESCRIPTOR.full_name
    if name == _DATA_SOURCE:
        return _redact_data_source(message, inside_secret=inside_secret)
    if name == _ANY:
        return _redact_any(message, inside_secret=inside_secret)  # type: ignore[arg-type]
    changed = False
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        secret = inside_secret or field.name in SECRET_FIELDS
        for item in _messages_of(field, value):
            changed |= _walk(item, inside_secret=secret)
    return changed


def _messages_of(field: Any, value: Any) -> list[Message]:
    if not field.is_repeated:
        return [value]
    if field.message_type.GetOptions().map_entry:
        return [item for item in value.values() if isinstance(item, Message)]
    return list(value)


def _redact_data_source(source: Message, *, inside_secret: bool) -> bool:
    if not inside_secret and source.WhichOneof("specifier") != "inline_bytes":
        return False
    if getattr(source, "inline_string", "") == REDACTED:
        return False
    source.Clear()
    source.inline_string = REDACTED  # type: ignore[attr-defined]
    return True


def _redact_any(packed: any_pb2.Any, *, inside_secret: bool) -> bool:
    if not packed.type_url:
        return False
    if inside_secret:
        packed.Clear()
        return True
    inner = _decode(packed.TypeName(), packed.value)
    if inner is None or not _walk(inner, inside_secret=False):
        return False
    packed.value = inner.SerializeToString(deterministic=True)
    return True
