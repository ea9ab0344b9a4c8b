"""A target's Listener for gRPC clients: an ``api_listener`` HttpConnectionManager.

gRPC subscribes LDS by the target's authority exactly (``xds:///echo`` -> ``echo``,
``xds:///echo:50051`` -> ``echo:50051``). The HCM gets its routes by RDS over ADS and has
one HTTP filter, the router, with its typed config (gRPC NACKs a filter it does not know
unless optional, and requires the router last).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from xds_server.translate.protos import ads, pack

ROUTER: Final = "envoy.filters.http.router"


@lru_cache(maxsize=8192)
def api_listener(target: str, route_configuration: str) -> Any:
    """The Listener named ``target`` whose routes are ``route_configuration``'s."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=target,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=route_configuration),
        http_filters=[hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router()))],
    )
    return listener_pb2.Listener(
        name=target, api_listener=api_listener_pb2.ApiListener(api_listener=pack(manager))
    )
