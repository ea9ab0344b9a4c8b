"""Helpers to read translated Envoy resources in tests."""

from __future__ import annotations

from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from xds_server.model import Config, Inventory
from xds_server.translate import ProxyResources, translate


def as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def connection_manager(listener: Any) -> Any:
    manager = hcm_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def default_resources(config: Config, inventory: Inventory | None = None) -> ProxyResources:
    return translate(inventory or Inventory(), config).default


def names(messages: tuple[Message, ...]) -> list[str]:
    return [
        getattr(m, "cluster_name", "") or getattr(m, "name")  # noqa: B009
        for m in messages
    ]


def routes_of(config: Config, inventory: Inventory | None = None) -> dict[str, list[Any]]:
    """Virtual host name -> its routes as dicts, for the only listener."""
    (route_configuration,) = default_resources(config, inventory).routes
    return {
        host["name"]: host.get("routes", [])
        for host in as_dict(route_configuration).get("virtual_hosts", [])
    }


def only_route(config: Config, inventory: Inventory | None = None) -> dict[str, Any]:
    (routes,) = routes_of(config, inventory).values()
    (single,) = routes
    result: dict[str, Any] = single
    return result
