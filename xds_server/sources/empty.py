"""A registry with no services: the default when neither a file nor Consul is given."""

from __future__ import annotations

import asyncio

from xds_server.model.inventory import Inventory
from xds_server.sources.base import Publish, SourceStatus


class EmptyRegistry:
    """Publishes one empty, synced inventory and then idles until cancelled."""

    def __init__(self) -> None:
        self._status = SourceStatus()

    @property
    def status(self) -> SourceStatus:
        return self._status

    async def run(self, publish: Publish) -> None:
        publish(Inventory.of({}))
        self._status = SourceStatus(ready=True)
        await asyncio.Event().wait()
