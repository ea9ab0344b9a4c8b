"""``X-Config-Revision``: the config revision current when a response was sent.

On every response under ``/v1``, so a script can tell which revision a read saw or a write
made without parsing bodies.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xds_server.store import ConfigStore, StoreError

HEADER = "X-Config-Revision"


class ConfigRevisionHeader:
    def __init__(self, app: ASGIApp, store: ConfigStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def send_with_revision(message: Message) -> None:
            if message["type"] == "http.response.start":
                try:
                    revision = self.store.current().revision
                except StoreError:  # not open yet
                    revision = None
                if revision is not None:
                    MutableHeaders(scope=message)[HEADER] = str(revision)
            await send(message)

        await self.app(scope, receive, send_with_revision)
