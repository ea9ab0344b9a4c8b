"""HTTP upgrades (WebSocket) a listener or a route rule lets through."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator

from xds_server.model.errors import invalid


class UpgradeType(StrEnum):
    """An ``Upgrade`` protocol Envoy forwards (its ``upgrade_type``, matched case-insensitively)."""

    WEBSOCKET = "websocket"


def _unique(values: tuple[UpgradeType, ...]) -> tuple[UpgradeType, ...]:
    if len(set(values)) != len(values):
        raise invalid("unique", "an upgrade type is listed more than once")
    return values


#: Upgrade types, each at most once.
Upgrades = Annotated[tuple[UpgradeType, ...], AfterValidator(_unique)]
