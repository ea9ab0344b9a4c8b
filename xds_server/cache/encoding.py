"""Protobuf wire encoding of xDS responses from pre-serialised parts.

A resource is serialised once per version; the bytes of its ``Any`` wrapper (for
state-of-the-world) and of its ``Resource`` wrapper (for delta) are kept ready and every
response is the concatenation of those parts plus a small trailer. Protobuf parsers accept
fields in any order and append repeated fields, so the concatenation is a valid message.
"""

from __future__ import annotations

_LEN = 2  # wire type "length-delimited"


def varint(value: int) -> bytes:
    # Fast paths: lengths and tags are almost always below 2**14.
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    return varint((field_number << 3) | _LEN) + varint(len(payload)) + payload


def string_field(field_number: int, value: str) -> bytes:
    return length_delimited(field_number, value.encode()) if value else b""


# google.protobuf.Any: type_url = 1, value = 2
def any_message(type_url: str, body: bytes) -> bytes:
    return string_field(1, type_url) + length_delimited(2, body)


# envoy.service.discovery.v3.DiscoveryResponse
_SOTW_VERSION_INFO = 1
_SOTW_RESOURCES = 2
_SOTW_TYPE_URL = 4
_SOTW_NONCE = 5


def sotw_resource_field(any_bytes: bytes) -> bytes:
    return length_delimited(_SOTW_RESOURCES, any_bytes)


def sotw_response(version_info: str, type_url: str, nonce: str, resource_fields: bytes) -> bytes:
    # One join: the resources (up to megabytes, per stream) are copied once, not per "+".
    return b"".join(
        (
            string_field(_SOTW_VERSION_INFO, version_info),
            resource_fields,
            string_field(_SOTW_TYPE_URL, type_url),
            string_field(_SOTW_NONCE, nonce),
        )
    )


# envoy.service.discovery.v3.Resource: version = 1, resource = 2, name = 3
def delta_resource_field(name: str, version: str, any_bytes: bytes) -> bytes:
    inner = string_field(1, version) + length_delimited(2, any_bytes) + string_field(3, name)
    return length_delimited(_DELTA_RESOURCES, inner)


def resource_fields(any_prefix: bytes, name: str, version: str, body: bytes) -> tuple[bytes, bytes]:
    """(``sotw_resource_field``, ``delta_resource_field``) of a resource whose ``Any`` is
    ``any_prefix`` (``any_type_prefix(type_url)``) + ``body``'s length and bytes: the same
    bytes as those functions give, in a few joins (a snapshot build encodes every new
    resource: this is most of a cold build after serialising)."""
    any_bytes = b"".join((any_prefix, varint(len(body)), body))
    any_length = varint(len(any_bytes))
    sotw = b"".join((_SOTW_RESOURCE_TAG, any_length, any_bytes))
    version_bytes, name_bytes = version.encode(), name.encode()
    inner = b"".join(
        (
            _VERSION_TAG + varint(len(version_bytes)) + version_bytes if version_bytes else b"",
            _DELTA_ANY_TAG,
            any_length,
            any_bytes,
            _NAME_TAG + varint(len(name_bytes)) + name_bytes if name_bytes else b"",
        )
    )
    delta = b"".join((_DELTA_RESOURCE_TAG, varint(len(inner)), inner))
    return sotw, delta


def any_type_prefix(type_url: str) -> bytes:
    """The bytes of an ``Any`` of ``type_url`` up to its value's length."""
    return string_field(1, type_url) + varint((2 << 3) | _LEN)


_SOTW_RESOURCE_TAG = varint((_SOTW_RESOURCES << 3) | _LEN)
_DELTA_ANY_TAG = varint((2 << 3) | _LEN)
# envoy.service.discovery.v3.Resource: version = 1, name = 3
_VERSION_TAG = varint((1 << 3) | _LEN)
_NAME_TAG = varint((3 << 3) | _LEN)


# envoy.service.discovery.v3.DeltaDiscoveryResponse
_DELTA_SYSTEM_VERSION_INFO = 1
_DELTA_RESOURCES = 2
_DELTA_TYPE_URL = 4
_DELTA_NONCE = 5
_DELTA_REMOVED_RESOURCES = 6
_DELTA_RESOURCE_TAG = varint((_DELTA_RESOURCES << 3) | _LEN)


def delta_response(
    system_version_info: str,
    type_url: str,
    nonce: str,
    resource_fields: bytes,
    removed: list[str],
) -> bytes:
    removed_fields = b"".join(
        length_delimited(_DELTA_REMOVED_RESOURCES, name.encode()) for name in removed
    )
    return b"".join(
        (
            string_field(_DELTA_SYSTEM_VERSION_INFO, system_version_info),
            resource_fields,
            string_field(_DELTA_TYPE_URL, type_url),
            string_field(_DELTA_NONCE, nonce),
            removed_fields,
        )
    )
