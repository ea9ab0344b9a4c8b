"""Everything the config store raises on purpose: one hierarchy under :class:`StoreError`."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of everything the store raises on purpose."""


class PreconditionFailed(StoreError):
    """An ``If-Match`` / ``If-None-Match`` precondition does not hold (HTTP 412).

    ``expected`` is the ETag the caller sent (``"*"`` for "must exist", ``None`` for "must not
    exist"); ``actual`` is the document's current ETag, ``None`` if it does not exist.
    """

    def __init__(self, kind: str, name: str, expected: str | None, actual: str | None) -> None:
        self.kind = kind
        self.name = name
        self.expected = expected
        self.actual = actual
        if expected is None:
            what = f"{kind}/{name} must not exist but has ETag {actual}"
        elif actual is None:
            what = f"{kind}/{name} does not exist (expected ETag {expected})"
        else:
            what = f"{kind}/{name} has ETag {actual}, not {expected}"
        super().__init__(f"precondition failed: {what}")


class NotFound(StoreError):
    """A document to delete does not exist (HTTP 404)."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind}/{name} does not exist")


class RevisionNotFound(StoreError):
    """A revision that was never committed (or is no longer in history)."""

    def __init__(self, revision: int, latest: int) -> None:
        self.revision = revision
        self.latest = latest
        super().__init__(f"revision {revision} does not exist (latest is {latest})")


class InvalidChange(StoreError, ValueError):
    """A change the store cannot accept whatever its state (HTTP 400/422): an empty kind or
    name, a spec that is not a JSON object, the same document twice in one commit."""


class StoreUnavailable(StoreError):
    """The storage cannot serve the request now (HTTP 503): disk full, read-only file system,
    database locked for too long, I/O error. Nothing was changed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"config store unavailable: {reason}")
