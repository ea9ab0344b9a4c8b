"""Reference checks across a snapshot's resources.

A snapshot is consistent when everything a resource points at is in it: every EDS cluster
has its ClusterLoadAssignment, every RDS name a listener uses has its RouteConfiguration,
every cluster a route sends to exists, and every SDS secret referenced exists. Envoy would
otherwise keep a listener or cluster warming, or answer 503 for a route.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from xds_server.cache.snapshot import Snapshot
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

_HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
_UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


class InconsistentSnapshot(ValueError):
    """A snapshot refers to resources it does not hold."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _type_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def _sds_names_in_common(common: Any) -> Iterator[str]:
    for config in common.tls_certificate_sds_secret_configs:
        yield config.name
    if common.HasField("validation_context_sds_secret_config"):
        yield common.validation_context_sds_secret_config.name
    if common.HasField("combined_validation_context"):
        combined = common.combined_validation_context
        if combined.HasField("validation_context_sds_secret_config"):
            yield combined.validation_context_sds_secret_config.name


def _sds_names_in_socket(socket: Any) -> Iterator[str]:
    if not socket.HasField("typed_config"):
        return
    type_name = _type_name(socket.typed_config.type_url)
    if type_name == _DOWNSTREAM_TLS:
        context: Any = tls_pb2.DownstreamTlsContext()
    elif type_name == _UPSTREAM_TLS:
        context = tls_pb2.UpstreamTlsContext()
    else:
        return
    socket.typed_config.Unpack(context)
    yield from _sds_names_in_common(context.common_tls_context)


def _listener_references(listener: Any) -> tuple[set[str], set[str]]:
    """(RDS names, SDS secret names) that a listener uses."""
    routes: set[str] = set()
    secrets: set[str] = set()
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        if chain.HasField("transport_socket"):
            secrets.update(_sds_names_in_socket(chain.transport_socket))
        for network_filter in chain.filters:
            if _type_name(network_filter.typed_config.type_url) != _HCM:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(hcm)
            if hcm.HasField("rds"):
                routes.add(hcm.rds.route_config_name)
    return routes, secrets


def _route_clusters(route_config: Any) -> set[str]:
    clusters: set[str] = set()
    for virtual_host in route_config.virtual_hosts:
        for route in virtual_host.routes:
            if not route.HasField("route"):
                continue
            action = route.route
            if action.cluster:
                clusters.add(action.cluster)
            for weighted in action.weighted_clusters.clusters:
                clusters.add(weighted.name)
            for mirror in action.request_mirror_policies:
                if mirror.cluster:
                    clusters.add(mirror.cluster)
    return clusters


#: References of each resource, by (type URL, name, version): the version is a hash of the
#: resource's bytes, so a resource unchanged since the last check is not parsed again.
_references: dict[tuple[str, str, str], Any] = {}
_MAX_REMEMBERED = 200_000


def _remembered(type_url: str, name: str, version: str, compute: Any, message: Any) -> Any:
    if not version:  # not from Snapshot.build: nothing to key the memo on
        return compute(message)
    key = (type_url, name, version)
    found = _references.get(key)
    if found is None:
        if len(_references) >= _MAX_REMEMBERED:
            _references.clear()
        found = _references[key] = compute(message)
    return found


def _cluster_references(cluster: Any) -> tuple[str | None, tuple[str, ...]]:
    """(the EDS name it needs, or None; the SDS secrets its transport socket uses)."""
    service = None
    if cluster.type == cluster_pb2.Cluster.EDS:
        service = cluster.eds_cluster_config.service_name or cluster.name
    secrets: tuple[str, ...] = ()
    if cluster.HasField("transport_socket"):
        secrets = tuple(_sds_names_in_socket(cluster.transport_socket))
    return service, secrets


def _version_of(snapshot: Snapshot, type_url: str, name: str) -> str:
    resource = snapshot.of_type(type_url).get(name)
    return resource.version if resource is not None else ""


def problems(snapshot: Snapshot) -> list[str]:
    """Every dangling reference in the snapshot, as human-readable sentences."""
    found: list[str] = []
    clusters = snapshot.messages.get(CLUSTER, {})
    endpoints = snapshot.of_type(ENDPOINT)
    routes = snapshot.of_type(ROUTE)
    secrets = snapshot.of_type(SECRET)
    for name, cluster in clusters.items():
        version = _version_of(snapshot, CLUSTER, name)
        service, cluster_secrets = _remembered(CLUSTER, name, version, _cluster_references, cluster)
        if service is not None and service not in endpoints:
            found.append(f"cluster {name!r} has no endpoints resource {service!r}")
        for secret in cluster_secrets:
            if secret not in secrets:
                found.append(f"cluster {name!r} uses missing secret {secret!r}")
    for name, listener in snapshot.messages.get(LISTENER, {}).items():
        version = _version_of(snapshot, LISTENER, name)
        route_names, secret_names = _remembered(
            LISTENER, name, version, _listener_references, listener
        )
        found.extend(
            f"listener {name!r} uses missing route configuration {r!r}"
            for r in sorted(route_names - routes.keys())
        )
        found.extend(
            f"listener {name!r} uses missing secret {s!r}"
            for s in sorted(secret_names - secrets.keys())
        )
    for name, route_config in snapshot.messages.get(ROUTE, {}).items():
        version = _version_of(snapshot, ROUTE, name)
        route_clusters = _remembered(ROUTE, name, version, _route_clusters, route_config)
        found.extend(
            f"route configuration {name!r} points at missing cluster {c!r}"
            for c in sorted(route_clusters - clusters.keys())
        )
    return found


#: Snapshots found consistent, by id (weakly: a snapshot's entry goes with it). A snapshot
#: never changes, and the pipeline hands an unchanged group's snapshot over again as the
#: same object, so a rebuild after one change checks only the snapshots it built.
_consistent: weakref.WeakValueDictionary[int, Snapshot] = weakref.WeakValueDictionary()


def check(snapshot: Snapshot) -> None:
    """Raise :class:`InconsistentSnapshot` when any reference dangles."""
    if _consistent.get(id(snapshot)) is snapshot:
        return
    found = problems(snapshot)
    if found:
        raise InconsistentSnapshot(found)
    _consistent[id(snapshot)] = snapshot
