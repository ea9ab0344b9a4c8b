"""Which instances of a service belong to a ``ServicePolicy`` subset (pure).

An instance's labels come from its endpoint metadata, where the sources put them:

- Consul (namespace ``consul``): ``tags`` (``Service.Tags``), ``meta`` (``Service.Meta``),
  ``node_meta`` (``Node.Meta``);
- the static registry (namespace ``xds_server``): ``tags`` (the endpoint's ``tags``), and
  every other key of the endpoint's ``metadata``; it has no node metadata.

A subset holds the instances that carry every listed tag and every listed key/value pair;
values that are not strings (a static ``version: 2``) are compared as their JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from xds_server.model.inventory import Endpoint, Health
from xds_server.model.service_policy import Subset

#: The namespaces the sources use (``sources.consul_mapping`` and ``sources.static`` name
#: the same; a unit test holds them equal: model cannot import sources).
CONSUL_NAMESPACE: Final = "consul"
STATIC_NAMESPACE: Final = "xds_server"
#: Joins a service and a subset in a cluster name; service names cannot contain it.
SUBSET_SEPARATOR: Final = "~"


@dataclass(frozen=True, slots=True)
class Labels:
    """What a subset filter can look at on one instance."""

    tags: frozenset[str]
    metadata: Mapping[str, str]
    node_metadata: Mapping[str, str]


def subset_cluster_name(service: str, subset: str) -> str:
    """The cluster (and EDS service name) of one subset: ``<service>~<subset>``."""
    return f"{service}{SUBSET_SEPARATOR}{subset}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _tags(value: Any) -> frozenset[str]:
    if isinstance(value, list | tuple):
        return frozenset(tag for tag in value if isinstance(tag, str))
    return frozenset()


def labels(endpoint: Endpoint) -> Labels:
    """The tags and metadata of ``endpoint``, wherever its source put them."""
    consul = endpoint.metadata.get(CONSUL_NAMESPACE)
    if isinstance(consul, Mapping):
        return Labels(
            _tags(consul.get("tags")),
            {str(k): _text(v) for k, v in _mapping(consul.get("meta")).items()},
            {str(k): _text(v) for k, v in _mapping(consul.get("node_meta")).items()},
        )
    static = _mapping(endpoint.metadata.get(STATIC_NAMESPACE))
    return Labels(
        _tags(static.get("tags")),
        {str(k): _text(v) for k, v in static.items() if k != "tags"},
        {},
    )


def in_subset(subset: Subset, endpoint: Endpoint) -> bool:
    """Whether ``endpoint`` belongs to ``subset`` (health aside: see ``members``)."""
    found = labels(endpoint)
    return (
        found.tags.issuperset(subset.tags)
        and all(found.metadata.get(k) == v for k, v in subset.metadata.items())
        and all(found.node_metadata.get(k) == v for k, v in subset.node_metadata.items())
    )


def members(subset: Subset, endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """The instances of ``subset`` that may be sent requests: failing ones are left out (as
    Consul does for the targets it resolves; kept, they would put Envoy's cluster into
    panic mode, where it load-balances to unhealthy hosts, as soon as most of a small
    subset fails), and with ``only_passing`` degraded (warning) ones too."""
    return tuple(
        endpoint
        for endpoint in endpoints
        if endpoint.health is not Health.UNHEALTHY
        and not (subset.only_passing and endpoint.health is Health.DEGRADED)
        and in_subset(subset, endpoint)
    )
