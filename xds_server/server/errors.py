"""Errors that end one stream with a gRPC status (never the server)."""

from __future__ import annotations

import grpc


class StreamError(Exception):
    """A request the server refuses; the stream ends with ``code`` and ``detail``."""

    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
