"""The service mesh's certificate authority: workload identities (SPIFFE X.509 certificates).

``ca`` (pure: roots and leaves), ``vault`` (where the root is kept: the config store's secret
side channel), ``authority`` (the runtime part: issue, renew at half-life, rotate roots). It
imports only ``xds_server.model``; the wiring (``app.py``) feeds it configs and hands the
``Identities`` it publishes to translation.
"""

from xds_server.mesh.authority import DEFAULT_ROTATION_PAUSE, MeshAuthority, MeshEvent
from xds_server.mesh.ca import MeshCaError, RootCa, ca_from_pem, ca_info, generate_root, issue_leaf
from xds_server.mesh.vault import MemoryVault, RootVault, StoreVault

__all__ = [
    "DEFAULT_ROTATION_PAUSE",
    "MemoryVault",
    "MeshAuthority",
    "MeshCaError",
    "MeshEvent",
    "RootCa",
    "RootVault",
    "StoreVault",
    "ca_from_pem",
    "ca_info",
    "generate_root",
    "issue_leaf",
]
