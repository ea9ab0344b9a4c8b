"""``grpc_resources(inventory, config)``: every registry service as a gRPC target.

For each service ``S``: listeners ``S`` and ``S:PORT`` (each port its instances listen on),
route configuration ``S``, cluster ``S`` and its assignment, and a cluster per subset the
target's routes send to (``S~subset``, as ``translate.subsets`` names them). Services that
routes send to but the registry lacks get a cluster without instances (calls fail with
UNAVAILABLE until some appear). Pure; per-item results are memoised in the modules.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from xds_server.model.config import Config
from xds_server.model.identity import IdentityMemo
from xds_server.model.inventory import Inventory, Service
from xds_server.model.route import Rule
from xds_server.translate.endpoints import load_assignment, usable
from xds_server.translate.output import ProxyResources, resource_name
from xds_server.translate.proxyless.clusters import grpc_assignment, grpc_cluster
from xds_server.translate.proxyless.listeners import api_listener
from xds_server.translate.proxyless.routes import (
    grpc_routes,
    plain_route_configuration,
    route_configuration,
)
from xds_server.translate.subsets import subset_assignment, subset_cluster_name, subset_targets


def targets(service: Service) -> tuple[str, ...]:
    """The listener names a gRPC client may ask for ``service`` by: ``S``, ``S:PORT``."""
    return _targets(service)


def _compute_targets(service: Service) -> tuple[str, ...]:
    ports = sorted({endpoint.port for endpoint in service.endpoints if usable(endpoint)})
    return (service.name, *(f"{service.name}:{port}" for port in ports))


#: Memoised by the service's identity (sources hand over unchanged services as they are).
_targets: IdentityMemo[Service, tuple[str, ...]] = IdentityMemo(_compute_targets)


def target_of(hostname: str) -> str:
    """The gRPC target a route's ``hostname`` names (``S`` for ``S`` and ``S:PORT``)."""
    return hostname.split(":", 1)[0]


def rules_by_target(config: Config) -> dict[str, list[Rule]]:
    """Per target, the rules of every ``Route`` whose hostnames name it, by route name."""
    found: dict[str, list[Rule]] = {}
    for _, entry in sorted(config.routes.items()):
        for target in dict.fromkeys(target_of(h) for h in entry.spec.hostnames):
            found.setdefault(target, []).extend(entry.spec.rules)
    return found


def grpc_resources(inventory: Inventory, config: Config) -> ProxyResources:
    """The resources every gRPC client gets (see the module docstring)."""
    retry_policies = {name: entry.spec for name, entry in config.retry_policies.items()}
    policies = {name: entry.spec for name, entry in config.service_policies.items()}
    by_target = rules_by_target(config)
    listeners: list[Any] = []
    routes: list[Any] = []
    clusters: dict[str, Any] = {}
    endpoints: dict[str, Any] = {}
    services: set[str] = set()
    subsets: set[tuple[str, str]] = set()
    for name in sorted(inventory.services):
        service = inventory.services[name]
        rules = by_target.get(name, [])
        listeners.extend(api_listener(target, name) for target in targets(service))
        if rules:
            routes.append(
                route_configuration(name, grpc_routes(rules, retry_policies, policies), policies)
            )
        else:
            routes.append(plain_route_configuration(name, policies.get(name)))
        services.add(name)
        services.update(_services(rules))
        subsets.update(subset_targets(rules, policies))
        policy = policies.get(name)
        if policy is not None and policy.default_subset is not None:  # the catch-all's
            subsets.add((name, policy.default_subset))
    for name in services:
        clusters[name] = grpc_cluster(name, policies.get(name))
        endpoints[name] = grpc_assignment(load_assignment(inventory.get(name) or Service(name)))
    for name, subset in subsets:
        cluster = subset_cluster_name(name, subset)
        clusters[cluster] = grpc_cluster(cluster, policies.get(name))
        service = inventory.get(name) or Service(name)
        policy = policies.get(name)
        if policy is not None:
            endpoints[cluster] = grpc_assignment(subset_assignment(service, policy, subset))
        else:
            endpoints[cluster] = grpc_assignment(load_assignment(Service(cluster)))
    return ProxyResources(
        clusters=tuple(clusters[n] for n in sorted(clusters)),
        endpoints=tuple(endpoints[n] for n in sorted(endpoints)),
        listeners=tuple(sorted(listeners, key=resource_name)),
        routes=tuple(routes),
    )


def _services(rules: Iterable[Rule]) -> set[str]:
    return {backend.service for rule in rules for backend in rule.backends if backend.weight > 0}
