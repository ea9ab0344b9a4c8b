"""Opaque page tokens for lists: the name of the last document of the previous page.

Lists are ordered by name and continue after a name (keyset paging), so a page never skips
or repeats a document that existed throughout, whatever is written in between.
"""

from __future__ import annotations

import base64
import binascii
import json

from xds_server.admin.problem import ApiError, item


def encode_token(after_name: str) -> str:
    raw = json.dumps({"after": after_name}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> str:
    """The name to continue after; a token not made by ``encode_token`` is a 400."""
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        after = value["after"]
        if not isinstance(after, str):
            raise TypeError(after)
        return after
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeEncodeError):
        raise ApiError(
            400,
            "invalid-page-token",
            "page_token is not a token from a previous page",
            [item("query.page_token", "not a token from next_page_token")],
        ) from None
