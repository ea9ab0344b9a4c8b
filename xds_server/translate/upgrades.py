"""Upgrades (WebSocket) -> the connection manager's and the routes' ``upgrade_configs``.

Envoy forwards an upgrade only if the connection manager lists its type; a route can then
turn it on or off. So a listener that allows an upgrade lists it enabled; one that does not,
but has a rule that does, lists it disabled, and that rule's routes enable it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from xds_server.model.upgrade import UpgradeType


def listener_upgrades(allowed: Iterable[UpgradeType], by_rules: Iterable[UpgradeType]) -> list[Any]:
    """The connection manager's entries: ``allowed`` enabled, the rest of ``by_rules`` not."""
    enabled = set(allowed)
    return [
        hcm_pb2.HttpConnectionManager.UpgradeConfig(
            upgrade_type=kind.value,
            enabled=wrappers_pb2.BoolValue(value=kind in enabled),
        )
        for kind in sorted({*enabled, *by_rules})
    ]


def route_upgrades(upgrades: Iterable[UpgradeType]) -> list[Any]:
    return [
        route_pb2.RouteAction.UpgradeConfig(
            upgrade_type=kind.value, enabled=wrappers_pb2.BoolValue(value=True)
        )
        for kind in sorted(set(upgrades))
    ]
