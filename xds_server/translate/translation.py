"""``translate(inventory, config)``: the whole operator config -> Envoy resources per group.

Pure and deterministic: no I/O, no clock, every tuple sorted by resource name. Each
listener, cluster and endpoint assignment is built by a cached per-item function
(``listeners.listener``, ``clusters.cluster``, ``endpoints.load_assignment``), so after a
change only what changed is rebuilt; route configurations are rebuilt per translation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from google.protobuf.message import Message

from xds_server.model.config import Config, Entry
from xds_server.model.inventory import Inventory, Service
from xds_server.model.route import RouteSpec
from xds_server.translate.clusters import cluster
from xds_server.translate.endpoints import load_assignment
from xds_server.translate.groups import listeners_of, named_groups
from xds_server.translate.listeners import listener
from xds_server.translate.output import ProxyResources, Translation
from xds_server.translate.routes import EnvoyRoute, envoy_routes, route_configuration


class _Translator:
    """Per-translation memo: each listener's resources are built once and shared by groups."""

    def __init__(self, inventory: Inventory, config: Config) -> None:
        self._inventory = inventory
        self._config = config
        retry_policies = {name: entry.spec for name, entry in config.retry_policies.items()}
        service_policies = {name: entry.spec for name, entry in config.service_policies.items()}
        self._routes_of: dict[str, list[Entry[RouteSpec]]] = {name: [] for name in config.listeners}
        self._translated: dict[str, tuple[EnvoyRoute, ...]] = {}
        for name, entry in config.routes.items():
            attached = [
                listener_name
                for listener_name in entry.spec.listeners
                if listener_name in self._routes_of
            ]
            for listener_name in attached:
                self._routes_of[listener_name].append(entry)
            if attached:
                self._translated[name] = envoy_routes(entry, retry_policies, service_policies)
        self._route_configurations: dict[str, Message] = {}

    def _route_configuration(self, listener_name: str) -> Message:
        found = self._route_configurations.get(listener_name)
        if found is None:
            found = route_configuration(
                listener_name, self._routes_of[listener_name], self._translated
            )
            self._route_configurations[listener_name] = found
        return found

    def _services(self, listener_names: Iterable[str]) -> list[str]:
        services = {
            service
            for listener_name in listener_names
            for entry in self._routes_of[listener_name]
            for rule in entry.spec.rules
            for service in rule.services
        }
        return sorted(services)

    def resources(self, listener_names: tuple[str, ...]) -> ProxyResources:
        services = self._services(listener_names)
        config, inventory = self._config, self._inventory
        return ProxyResources(
            clusters=tuple(cluster(name, config.service_policy(name)) for name in services),
            endpoints=tuple(
                load_assignment(inventory.get(name) or Service(name)) for name in services
            ),
            listeners=tuple(listener(name, config.listeners[name].spec) for name in listener_names),
            routes=tuple(self._route_configuration(name) for name in listener_names),
        )


def translate(inventory: Inventory, config: Config) -> Translation:
    """Envoy resources for every proxy group (see ``Translation``)."""
    translator = _Translator(inventory, config)
    default_listeners = listeners_of(config, None)
    default = translator.resources(default_listeners)
    groups: dict[str, ProxyResources] = {}
    for group in named_groups(config):
        names = listeners_of(config, group)
        groups[group] = default if names == default_listeners else translator.resources(names)
    groups_view: Mapping[str, ProxyResources] = MappingProxyType(groups)
    return Translation(default=default, groups=groups_view)
