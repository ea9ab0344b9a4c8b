"""What translation produces: Envoy resources per proxy group.

The messages are shared, not copied (per-service results are cached across translations);
treat them as immutable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.protobuf.message import Message


@dataclass(frozen=True)
class ProxyResources:
    """Everything one proxy group's Envoys get, each tuple sorted by resource name."""

    clusters: tuple[Message, ...] = ()  # envoy.config.cluster.v3.Cluster
    endpoints: tuple[Message, ...] = ()  # envoy.config.endpoint.v3.ClusterLoadAssignment
    listeners: tuple[Message, ...] = ()  # envoy.config.listener.v3.Listener
    routes: tuple[Message, ...] = ()  # envoy.config.route.v3.RouteConfiguration
    secrets: tuple[Message, ...] = ()  # envoy.extensions.transport_sockets.tls.v3.Secret

    def messages(self) -> tuple[Message, ...]:
        """All of them, in push order (clusters, endpoints, listeners, routes, secrets)."""
        return self.clusters + self.endpoints + self.listeners + self.routes + self.secrets

    def merged(self, other: ProxyResources) -> ProxyResources:
        """These and ``other``'s resources, each tuple sorted by name again. Edge and mesh
        resource names cannot overlap, except the mesh secrets of a group that is both an
        edge caller of mesh services and a sidecar (the same identity): kept once."""
        return ProxyResources(
            clusters=_by_name(self.clusters + other.clusters),
            endpoints=_by_name(self.endpoints + other.endpoints),
            listeners=_by_name(self.listeners + other.listeners),
            routes=_by_name(self.routes + other.routes),
            secrets=_by_name(self.secrets + other.secrets),
        )


def resource_name(message: Message) -> str:
    """A resource's name (an endpoint assignment's is its ``cluster_name``)."""
    return str(getattr(message, "name", "") or getattr(message, "cluster_name", ""))


def _by_name(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    unique: dict[str, Message] = {}
    for message in messages:
        unique.setdefault(resource_name(message), message)
    return tuple(unique[name] for name in sorted(unique))


def _no_groups() -> Mapping[str, ProxyResources]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Translation:
    #: For every proxy group not named in any listener's ``groups``.
    default: ProxyResources = ProxyResources()
    #: For each group named by some listener's ``groups``, and each group of a mesh sidecar
    #: (sorted by group name).
    groups: Mapping[str, ProxyResources] = field(default_factory=_no_groups)
    #: For every proxyless gRPC client, whatever its group (``translate.proxyless``).
    grpc: ProxyResources = ProxyResources()

    def for_group(self, group: str) -> ProxyResources:
        """The resources of the Envoys whose ``node.cluster`` is ``group``."""
        return self.groups.get(group, self.default)
