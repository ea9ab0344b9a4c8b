"""Names of the mesh's Envoy resources (stable, so a rotation changes secrets only).

Service and group names cannot hold ``/``, so none of these collides with an edge resource
(listeners and clusters are named after documents and services, secrets ``certificate/…``).
"""

from __future__ import annotations

from typing import Final

from xds_server.model.mesh import identity_secret_name

__all__ = [
    "TRUST_BUNDLE_SECRET",
    "identity_secret_name",
    "inbound_listener_name",
    "local_cluster_name",
    "outbound_listener_name",
    "stat_prefix",
    "upstream_cluster_name",
    "upstream_sni",
]

TRUST_BUNDLE_SECRET: Final = "mesh/trust-bundle"


def inbound_listener_name(service: str) -> str:
    return f"mesh-inbound/{service}"


def outbound_listener_name(service: str, upstream: str) -> str:
    return f"mesh-outbound/{service}/{upstream}"


def local_cluster_name(service: str) -> str:
    """The static cluster of the local application behind ``service``'s inbound port."""
    return f"mesh-local/{service}"


def upstream_cluster_name(upstream: str) -> str:
    """The EDS cluster of ``upstream``'s sidecars (their inbound mTLS ports)."""
    return f"mesh/{upstream}"


def stat_prefix(name: str) -> str:
    """A stats prefix for resource ``name`` (``/`` and ``.`` would split Envoy's stat names)."""
    return name.replace("/", "_").replace(".", "_")


def upstream_sni(trust_domain: str, upstream: str) -> str:
    """The server name an outbound connection to ``upstream`` sends (Consul sends a similar
    ``<service>.default.<dc>.internal.<trust domain>``); for logs and taps, the check that
    matters is the SPIFFE ID in the certificate."""
    return f"{upstream}.service.{trust_domain}"
