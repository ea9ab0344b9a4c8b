"""Resources for proxyless gRPC clients (grpcio, grpc-java, grpc-go, grpc-js: ``xds:///``).

gRPC's xDS client (gRFC A27 and its successors) is stricter than Envoy: it subscribes LDS
and CDS by name, needs an ``api_listener``, knows a handful of HTTP filters, route actions,
load-balancing policies and endpoint forms, and NACKs the rest. So its resources are
translated for it here, never Envoy's sent as they are (see ``listeners``, ``routes``,
``clusters``). Every registry service ``S`` resolves as ``xds:///S`` and ``xds:///S:PORT``.
"""

from xds_server.translate.proxyless.resources import grpc_resources

__all__ = ["grpc_resources"]
