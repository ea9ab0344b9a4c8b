"""Requests encoded by hand and responses decoded with memoised resources.

A simulated fleet sends the same requests and receives the same resources thousands of
times. Encoding a request is a concatenation of pre-encoded parts (the resource-name list of
a subscription is encoded once per distinct set), and a resource's ``Any`` bytes are decoded
once per worker process: identical bytes give the same names, so later copies cost a dict
lookup. Every response is still parsed in full (``FromString``), as Envoy would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2

from xds_server.cache.encoding import length_delimited, string_field

_PREFIX: Final = "type.googleapis.com/"
CLUSTER: Final = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE: Final = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
_HCM: Final = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

SHORT: Final = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}
TYPE_OF: Final = {short: url for url, short in SHORT.items()}

ADS: Final = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SOTW_METHOD: Final = ADS + "StreamAggregatedResources"
DELTA_METHOD: Final = ADS + "DeltaAggregatedResources"

DiscoveryResponse = discovery_pb2.DiscoveryResponse
DeltaDiscoveryResponse = discovery_pb2.DeltaDiscoveryResponse


# -- encoding --------------------------------------------------------------------------------


def node_bytes(node_id: str, group: str) -> bytes:
    node = base_pb2.Node(id=node_id, cluster=group, user_agent_name="envoy")
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.version.minor_number = 40
    return bytes(node.SerializeToString())


_names_memo: dict[tuple[int, frozenset[str]], bytes] = {}


def names_block(field_number: int, names: frozenset[str]) -> bytes:
    """The repeated-string field of ``names`` (sorted), encoded once per distinct set."""
    key = (field_number, names)
    block = _names_memo.get(key)
    if block is None:
        if len(_names_memo) > 4096:
            _names_memo.clear()
        block = b"".join(length_delimited(field_number, n.encode()) for n in sorted(names))
        _names_memo[key] = block
    return block


def sotw_request(
    type_url: str,
    *,
    version: str = "",
    nonce: str = "",
    names: bytes = b"",
    node: bytes = b"",
) -> bytes:
    """A ``DiscoveryRequest``; ``names`` is a :func:`names_block` for field 3."""
    return (
        string_field(1, version)
        + (length_delimited(2, node) if node else b"")
        + names
        + string_field(4, type_url)
        + string_field(5, nonce)
    )


def delta_request(
    type_url: str,
    *,
    nonce: str = "",
    subscribe: Iterable[str] = (),
    unsubscribe: Iterable[str] = (),
    node: bytes = b"",
) -> bytes:
    """A ``DeltaDiscoveryRequest``. The name lists are :func:`names_block` s (sorted, encoded
    once per distinct set), as the SotW requests' are: a thousand proxies subscribing to the
    same thousand EDS names encode them once, not once each."""
    return (
        (length_delimited(1, node) if node else b"")
        + string_field(2, type_url)
        + (names_block(3, frozenset(subscribe)) if subscribe else b"")
        + (names_block(4, frozenset(unsubscribe)) if unsubscribe else b"")
        + string_field(6, nonce)
    )


# -- decoding --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a simulated Envoy needs from one resource."""

    name: str
    #: CDS: the EDS name the cluster subscribes to; LDS: the RDS names of the listener.
    refs: tuple[str, ...] = ()


def _cluster(value: bytes) -> Decoded:
    cluster = cluster_pb2.Cluster.FromString(value)
    refs: tuple[str, ...] = ()
    if cluster.type == cluster_pb2.Cluster.EDS:
        refs = (cluster.eds_cluster_config.service_name or cluster.name,)
    return Decoded(cluster.name, refs)


def _endpoints(value: bytes) -> Decoded:
    return Decoded(endpoint_pb2.ClusterLoadAssignment.FromString(value).cluster_name)


def _listener(value: bytes) -> Decoded:
    listener = listener_pb2.Listener.FromString(value)
    routes: set[str] = set()
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url.rsplit("/", 1)[-1] != _HCM:
                continue
            hcm = hcm_pb2.HttpConnectionManager.FromString(network_filter.typed_config.value)
            if hcm.HasField("rds"):
                routes.add(hcm.rds.route_config_name)
    return Decoded(listener.name, tuple(sorted(routes)))


def _route(value: bytes) -> Decoded:
    return Decoded(route_pb2.RouteConfiguration.FromString(value).name)


_DECODERS: Final = {CLUSTER: _cluster, ENDPOINT: _endpoints, LISTENER: _listener, ROUTE: _route}
_MEMO_LIMIT: Final = 200_000


class ResourceDecoder:
    """Per worker: resource bytes → :class:`Decoded`, each distinct value decoded once."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, bytes], Decoded] = {}
        self.decoded = 0

    def decode(self, type_url: str, value: bytes) -> Decoded:
        key = (type_url, value)
        found = self._memo.get(key)
        if found is None:
            decoder = _DECODERS.get(type_url)
            found = decoder(value) if decoder is not None else Decoded("")
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = found
            self.decoded += 1
        return found

    def sotw(self, response: Any) -> list[Decoded]:
        type_url = response.type_url
        return [self.decode(type_url, packed.value) for packed in response.resources]

    def delta_names(self, response: Any) -> list[str] | None:
        """EDS and RDS: the names of a delta response's resources, all a simulated Envoy
        needs of them (delta carries them beside each resource, so SotW's decode of every
        resource is not needed); None for the types whose references are decoded."""
        if response.type_url in (ENDPOINT, ROUTE):
            return [resource.name for resource in response.resources]
        return None

    def delta(self, response: Any) -> list[Decoded]:
        type_url = response.type_url
        if type_url in (ENDPOINT, ROUTE):
            return [Decoded(name) for name in self.delta_names(response) or ()]
        found = []
        for resource in response.resources:
            decoded = self.decode(type_url, resource.resource.value)
            if not decoded.name:
                decoded = Decoded(resource.name, decoded.refs)
            found.append(decoded)
        return found
