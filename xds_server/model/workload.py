"""Workload identities: what the mesh CA has issued, as translation reads it.

An input of translation like the inventory: the CA (``mesh/``) issues a certificate per
service that has sidecars (and per edge group that calls mesh services), re-issues each at
half its lifetime and publishes a new ``Identities``; translation turns it into SDS secrets.
Private keys travel here only on their way to the proxies that own them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """One service's certificate: a SPIFFE leaf and its key (PEM)."""

    service: str
    spiffe_id: str
    #: The leaf first, then any intermediates up to (not including) the root.
    certificate_chain: str
    private_key: str = field(repr=False)
    #: Hex, as ``openssl x509 -serial`` and Envoy's ``/certs`` show it.
    serial: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True)
class Identities:
    """Every issued identity, and the roots every proxy of the mesh trusts."""

    by_service: Mapping[str, WorkloadIdentity] = field(default_factory=lambda: MappingProxyType({}))
    #: PEM of each trusted root, the one issuing now first (during a root rotation the next
    #: and the previous roots are both here).
    trust_bundle: tuple[str, ...] = ()

    def get(self, service: str) -> WorkloadIdentity | None:
        return self.by_service.get(service)


NO_IDENTITIES: Identities = Identities()
