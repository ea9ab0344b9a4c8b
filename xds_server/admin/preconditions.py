"""``If-Match`` / ``If-None-Match`` (RFC 9110 section 13) turned into store preconditions.

ETags are strong (``"7"``: the revision of the document's last change); a weak one
(``W/"7"``) never matches, as RFC 9110 requires for ``If-Match``. An unquoted ``7`` is read
as ``"7"``, for hand-written curl calls.
"""

from __future__ import annotations

from xds_server.store import Document, PreconditionFailed


def parse_etags(header: str | None) -> list[str] | None:
    """The entity tags of a header, ``["*"]`` for ``*``, ``None`` when it is absent."""
    if header is None:
        return None
    tags = []
    for raw in header.split(","):
        tag = raw.strip()
        if not tag:
            continue
        if tag != "*" and not tag.startswith(('"', "W/")):
            tag = f'"{tag}"'
        tags.append(tag)
    return tags


def if_match(header: str | None, current: Document | None) -> str | None:
    """The store's ``if_match`` for ``If-Match: header``: the current ETag if listed (so the
    store accepts it), else one that fails."""
    tags = parse_etags(header)
    if not tags:  # absent, or empty
        return None
    if "*" in tags:
        return "*"
    if current is not None and current.etag in tags:
        return current.etag
    return tags[0]


def if_none_match(header: str | None, current: Document | None) -> bool:
    """The store's ``if_none_match`` ("create only") for a write's ``If-None-Match``; raise
    ``PreconditionFailed`` at once when it lists the current ETag."""
    tags = parse_etags(header)
    if not tags:
        return False
    if "*" in tags:
        return True
    if current is not None and current.etag in tags:
        raise PreconditionFailed(current.kind, current.name, None, current.etag)
    return False


def not_modified(header: str | None, current: Document) -> bool:
    """Whether a ``GET`` with ``If-None-Match: header`` gets 304 (weak comparison)."""
    tags = parse_etags(header)
    if not tags:
        return False
    return "*" in tags or any(tag.removeprefix("W/") == current.etag for tag in tags)
