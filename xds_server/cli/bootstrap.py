"""``xds-server bootstrap``: an Envoy bootstrap pointing at this control plane.

The same document as ``envoy/bootstrap.yaml`` (a test keeps them equal), with the node, the
ADS address, SotW or delta, the admin address and, optionally, TLS to the control plane
filled in. Only the control plane's own cluster is static; everything else arrives over ADS.

``--sidecar SERVICE`` prints the same document for one of a mesh service's sidecars: only the
node differs (``node.cluster`` is the service's group, ``node.id`` names the sidecar), and its
admin interface stays on loopback. Listeners, clusters and the workload certificate (SDS) all
arrive on the one ADS stream, so nothing about the mesh is static.

``--zone ZONE`` sets ``node.locality.zone``: the server then sends that Envoy its group's
endpoints with its own zone first (priority 0), failing over to the other zones, then to
the other datacenters.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any, Final

from xds_server.model.names import SERVICE_NAME_PATTERN

SYSTEM_CA: Final = "/etc/ssl/certs/ca-certificates.crt"
_TLS_SOCKET: Final = "envoy.transport_sockets.tls"
_UPSTREAM_TLS: Final = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)
_HTTP_OPTIONS: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#: Where an edge Envoy's admin listens unless told; a sidecar's (Consul's default port for its
#: Envoy sidecars), so that an edge proxy and a sidecar on one host do not collide.
EDGE_ADMIN: Final = "127.0.0.1:9901"
SIDECAR_ADMIN: Final = "127.0.0.1:19000"
#: A zone as clouds and Consul name them (``us-east-1a``, ``europe-west1-b``, ``zone:a``).
_ZONE_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"


class BootstrapError(ValueError):
    """An option the bootstrap cannot use (the message names it)."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    @staticmethod
    def parse(text: str, option: str, *, any_port: bool = False) -> HostPort:
        """``HOST:PORT``; ``any_port`` accepts port 0 (the OS picks one)."""
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        lowest = 0 if any_port else 1
        if not sep or not host or not port.isdigit() or not lowest <= int(port) <= 65535:
            raise BootstrapError(f"{option}: expected HOST:PORT, got {text!r}")
        return HostPort(host, int(port))

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS from Envoy to the control plane: ``ca`` verifies the server, ``cert``/``key``
    authenticate Envoy (mTLS), ``sni`` names the server (default: the ADS host name)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    sni: str | None = None


def sidecar_node(
    service: str, *, group: str | None = None, node_id: str | None = None
) -> tuple[str, str]:
    """``(node_id, group)`` of one of ``service``'s sidecars: the group named like the service
    (a ``Sidecar`` without ``groups`` expects it) unless ``group`` is given; the node id
    ``<service>-sidecar-<hostname>`` unless ``node_id`` is given. Two sidecars on one machine
    share a host name, so each needs its own ``node_id`` there."""
    if not re.fullmatch(SERVICE_NAME_PATTERN, service):
        raise BootstrapError(
            f"--sidecar: {service!r} is not a service name (letters, digits, '.', '_', '-')"
        )
    if group is not None and not re.fullmatch(SERVICE_NAME_PATTERN, group):
        raise BootstrapError(f"--group: {group!r} is not a proxy group name")
    if node_id is None:
        node_id = f"{service}-sidecar-{socket.gethostname()}"
    return node_id, group or service


def _socket_address(address: HostPort) -> dict[str, Any]:
    return {"socket_address": {"address": address.host, "port_value": address.port}}


def _tls_socket(tls: TlsOptions, ads: HostPort) -> dict[str, Any]:
    """Like ``envoy/bootstrap-mtls.yaml``: TLS 1.2+, ALPN h2, the server verified against
    ``ca`` (and, when a name is known, its DNS SAN), Envoy's certificate for mTLS."""
    if (tls.cert is None) != (tls.key is None):
        raise BootstrapError("--cert and --key: give both (mTLS) or neither")
    sni = tls.sni or (None if ads.is_ip else ads.host)
    common: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
    }
    if tls.cert is not None and tls.key is not None:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}
        ]
    validation: dict[str, Any] = {"trusted_ca": {"filename": tls.ca or SYSTEM_CA}}
    if sni:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "DNS", "matcher": {"exact": sni}}
        ]
    common["validation_context"] = validation
    context: dict[str, Any] = {"@type": _UPSTREAM_TLS}
    if sni:
        context["sni"] = sni
    context["common_tls_context"] = common
    return {"name": _TLS_SOCKET, "typed_config": context}


def bootstrap(
    node_id: str,
    group: str,
    *,
    ads: HostPort | None = None,
    delta: bool = False,
    admin: HostPort | None = None,
    tls: TlsOptions | None = None,
    zone: str = "",
) -> dict[str, Any]:
    """The bootstrap as a JSON-ready dict (keys in the order of ``envoy/bootstrap.yaml``)."""
    if not node_id:
        raise BootstrapError("--node-id: must not be empty")
    node: dict[str, Any] = {"id": node_id, "cluster": group}
    if zone:
        if not re.fullmatch(_ZONE_PATTERN, zone):
            raise BootstrapError(
                f"--zone: {zone!r} is not a zone name (letters, digits, '.', '_', '-', ':')"
            )
        node["locality"] = {"zone": zone}
    ads = ads or HostPort("127.0.0.1", 18000)
    admin = admin or HostPort("127.0.0.1", 9901)
    cluster: dict[str, Any] = {
        "name": "xds_server",
        "type": "STATIC" if ads.is_ip else "STRICT_DNS",
    }
    if not ads.is_ip:
        cluster["dns_lookup_family"] = "V4_ONLY"
    cluster |= {
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": "type.googleapis.com/" + _HTTP_OPTIONS,
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"}
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": "xds_server",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(ads)}}]}],
        },
    }
    if tls is not None:
        cluster["transport_socket"] = _tls_socket(tls, ads)
    return {
        "node": node,
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_server"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {"clusters": [cluster]},
        "admin": {"address": _socket_address(admin)},
    }


def grpc_bootstrap(
    node_id: str, *, group: str = "", ads: HostPort | None = None, zone: str = ""
) -> dict[str, Any]:
    """The JSON bootstrap of a proxyless gRPC application (``GRPC_XDS_BOOTSTRAP``, gRFC A27):
    this server as its one xDS server over ADS (``server_features: ["xds_v3"]``; plaintext,
    as gRPC's ``insecure`` channel credentials), its node, and its locality with ``zone``."""
    if not node_id:
        raise BootstrapError("--node-id: must not be empty")
    node: dict[str, Any] = {"id": node_id}
    if group:
        node["cluster"] = group
    if zone and not re.fullmatch(_ZONE_PATTERN, zone):
        raise BootstrapError(
            f"--zone: {zone!r} is not a zone name (letters, digits, '.', '_', '-', ':')"
        )
    # Always present: grpc-js-xds refuses a node without a locality (grpcio does not mind).
    node["locality"] = {"zone": zone} if zone else {}
    ads = ads or HostPort("127.0.0.1", 18000)
    host = f"[{ads.host}]" if ":" in ads.host else ads.host
    return {
        "xds_servers": [
            {
                "server_uri": f"{host}:{ads.port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": node,
    }
