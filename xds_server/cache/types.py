"""Type URLs of the xDS resources we serve, in the order an ADS stream pushes them."""

from __future__ import annotations

from typing import Final

_PREFIX: Final = "type.googleapis.com/"

CLUSTER: Final = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE: Final = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET: Final = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

#: Make before break: clusters before their endpoints, listeners before their routes,
#: and secrets last (Envoy keeps a listener or cluster warming until its secret arrives).
PUSH_ORDER: Final[tuple[str, ...]] = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)

#: Types that a client receives in full unless it names resources (LDS, CDS).
WILDCARD_BY_DEFAULT: Final[frozenset[str]] = frozenset({CLUSTER, LISTENER})

SHORT_NAMES: Final[dict[str, str]] = {
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    LISTENER: "LDS",
    ROUTE: "RDS",
    SECRET: "SDS",
}


def type_url_of(full_name: str) -> str:
    """The type URL of a protobuf message type given its full name."""
    return _PREFIX + full_name
