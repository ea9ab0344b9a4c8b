"""Which kind of xDS client a node is: an Envoy, or a proxyless gRPC application.

gRPC's xDS client (gRFC A27) names itself in ``node.user_agent_name`` ("gRPC Python",
"gRPC Go", "grpc-java-netty", "grpc-node-js"...) and announces the client feature
``xds.config.resource-in-sotw``, which Envoy (user agent ``envoy``) never sends. Such a
client is served the gRPC resources (``translate.proxyless``), never Envoy's: the cache
keeps one snapshot of them beside the groups' (``CacheState.grpc``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

#: A client feature only gRPC's xDS client announces (grpc/grpc doc/grpc_xds_features.md).
#: Not ``envoy.lb.does_not_support_overprovisioning``: Envoy announces that one too.
_GRPC_FEATURE: Final = "xds.config.resource-in-sotw"


class ClientType(StrEnum):
    ENVOY = "envoy"
    GRPC = "grpc"


def client_type(node: Any) -> ClientType:
    """``node``'s (an ``envoy.config.core.v3.Node``) kind of client; Envoy by default."""
    if node is None:
        return ClientType.ENVOY
    name = str(node.user_agent_name).lower()
    if name == "envoy":
        return ClientType.ENVOY
    if "grpc" in name or _GRPC_FEATURE in node.client_features:
        return ClientType.GRPC
    return ClientType.ENVOY
