"""What the routers share: the injected context, the config checker and the writer."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from xds_server.admin.checker import CheckedState, ConfigChecker
from xds_server.admin.context import AdminContext
from xds_server.admin.writes import ConfigWriter


@dataclass(frozen=True, slots=True)
class AdminServices:
    context: AdminContext
    checker: ConfigChecker
    writer: ConfigWriter

    @staticmethod
    def build(context: AdminContext) -> AdminServices:
        checker = ConfigChecker(context.inventory)
        writer = ConfigWriter(context.store, checker, context.preview)
        return AdminServices(context, checker, writer)

    def checked(self) -> CheckedState:
        """The current config, parsed and validated (cached until it or the inventory changes)."""
        return self.checker.check(self.context.store.current())

    def actor(self, request: Request) -> str:
        return self.context.actor(request)
