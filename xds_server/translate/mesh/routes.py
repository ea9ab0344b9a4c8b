"""Routes attached to a mesh upstream -> the route configuration of a sidecar's outbound
listener to it (``mesh-outbound/<service>/<upstream>``, over RDS).

The attached routes' rules are translated exactly as at the edge (``envoy_routes``: matches,
weighted backends, retries, timeouts, hash policies) and ordered by the same precedence;
only their clusters change, each backend service B becoming ``mesh/<B>`` (B's sidecars over
mutual TLS). A last catch-all sends everything else to the upstream itself, as the inline
route of an outbound listener without attached routes does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.config.route.v3 import route_pb2 as route_configuration_pb2
from google.protobuf.message import Message

from xds_server.translate.hostnames import specificity
from xds_server.translate.mesh.names import upstream_cluster_name
from xds_server.translate.precedence import Position, sort_key
from xds_server.translate.routes import EnvoyRoute

#: Per attached route: its name, age and translated Envoy routes.
AttachedToUpstream = tuple[str, int, tuple[EnvoyRoute, ...]]


def _to_mesh(message: Any) -> Any:
    """A copy of an edge route whose clusters are the mesh clusters of the same services."""
    result = route_pb2.Route()
    result.CopyFrom(message)
    if result.HasField("route"):
        action = result.route
        if action.cluster:
            action.cluster = upstream_cluster_name(action.cluster)
        for weighted in action.weighted_clusters.clusters:
            weighted.name = upstream_cluster_name(weighted.name)
        for mirror in action.request_mirror_policies:
            mirror.cluster = upstream_cluster_name(mirror.cluster)
    return result


def upstream_route_configuration(
    name: str, attached: tuple[AttachedToUpstream, ...], catch_all: Message
) -> Message:
    """Route configuration ``name``: the ``attached`` routes' rules by precedence, then the
    ``catch_all`` route to the upstream (cached on the translated routes' identities)."""
    key = (name, attached, id(catch_all))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is catch_all:
        return hit[1]
    result = _configuration(name, attached, catch_all)
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[key] = (catch_all, result)
    return result


#: ``catch_all`` comes from an ``lru_cache`` (the same object while its inputs are), and
#: ``EnvoyRoute`` hashes by identity, so an unchanged configuration costs a lookup.
_CACHE: dict[tuple[Any, ...], tuple[Message, Message]] = {}
_CACHE_LIMIT = 1024


def _configuration(
    name: str, attached: tuple[AttachedToUpstream, ...], catch_all: Message
) -> Message:
    host_rank = specificity("*")
    ranked: list[tuple[tuple[object, ...], Any]] = []
    for route_name, created_revision, translated in attached:
        for envoy_route in translated:
            position = Position(
                host_rank, created_revision, route_name, envoy_route.rule, envoy_route.match_index
            )
            ranked.append((sort_key(position, envoy_route.match), _to_mesh(envoy_route.message)))
    ranked.sort(key=lambda item: item[0])
    routes: Sequence[Any] = [message for _, message in ranked]
    result: Message = route_configuration_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_pb2.VirtualHost(name=name, domains=["*"], routes=[*routes, catch_all])
        ],
    )
    return result


def clear_cache() -> None:
    """Forget the memoised configurations (tests: a cold translation gives the same bytes)."""
    _CACHE.clear()
