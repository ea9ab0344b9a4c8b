"""What the routers share: the injected context, the config checker and the writer."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from xds_server.admin.checker import CheckedState, ConfigChecker
from xds_server.admin.context import AdminContext
from xds_server.admin.documents import change_of
from xds_server.admin.writes import ConfigWriter
from xds_server.model import AnyDocument
from xds_server.store import Change


@dataclass(frozen=True, slots=True)
class AdminServices:
    context: AdminContext
    checker: ConfigChecker
    writer: ConfigWriter

    @staticmethod
    def build(context: AdminContext) -> AdminServices:
        checker = ConfigChecker(context.inventory, parser=context.parser)
        writer = ConfigWriter(context.store, checker, context.preview)
        return AdminServices(context, checker, writer)

    def checked(self) -> CheckedState:
        """The current config, parsed and validated (cached until it or the inventory changes)."""
        return self.checker.check(self.context.store.current())

    def change_of(
        self, document: AnyDocument, *, if_match: str | None = None, if_none_match: bool = False
    ) -> Change:
        """The store change that writes ``document``; its parse is remembered, so checking
        the resulting config does not parse it a second time."""
        change = change_of(document, if_match=if_match, if_none_match=if_none_match)
        if change.spec is not None:
            self.checker.remember(document, change.spec)
        return change

    def actor(self, request: Request) -> str:
        return self.context.actor(request)
