"""Catalog records (node, service instance, health check) and their JSON renderings.

Renderings follow the samples in Consul's API docs (see /work/shared/consul/*.json): the keys
of health-service.json, plus `CreateIndex`/`ModifyIndex`, which Consul adds from RaftIndex.
Go's `omitempty` is honoured where Consul declares it (NodeService.TaggedAddresses and Port);
nil maps that Consul does not normalise (Node.TaggedAddresses, Node.Meta) render as null.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HEALTH_STATES", "NAMESPACE", "Check", "Node", "Service", "default_weights"]

HEALTH_STATES = ("passing", "warning", "critical")
NAMESPACE = "default"


def default_weights() -> dict[str, int]:
    return {"Passing": 1, "Warning": 1}


@dataclass
class Node:
    name: str
    address: str
    datacenter: str
    id: str = ""
    tagged_addresses: dict[str, str] | None = None
    meta: dict[str, str] | None = None
    create_index: int = 0
    modify_index: int = 0

    def same(self, other: Node) -> bool:
        return (
            self.id == other.id
            and self.name == other.name
            and self.address == other.address
            and self.datacenter == other.datacenter
            and self.tagged_addresses == other.tagged_addresses
            and self.meta == other.meta
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Node": self.name,
            "Address": self.address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": dict(self.tagged_addresses)
            if self.tagged_addresses is not None
            else None,
            "Meta": dict(self.meta) if self.meta is not None else None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass
class Service:
    node: str
    id: str
    name: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    port: int = 0
    # {"lan": {"address": "10.0.0.1", "port": 8000}}, as the docs' samples spell it.
    tagged_addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=default_weights)
    enable_tag_override: bool = False
    kind: str = ""
    # A proxy's `Proxy` block as Consul renders it (see `proxy_json`); None for typical services.
    proxy: dict[str, Any] | None = None
    connect_native: bool = False
    # Consul 1.17+'s `Locality` ({"Region", "Zone"}, both omitempty); None when not set.
    locality: dict[str, str] | None = None
    create_index: int = 0
    modify_index: int = 0

    @property
    def destination(self) -> str:
        """The service this instance is a mesh endpoint of (as /v1/health/connect lists it)."""
        if self.kind == "connect-proxy" and self.proxy is not None:
            return str(self.proxy.get("DestinationServiceName") or "")
        return self.name if not self.kind and self.connect_native else ""

    def proxy_json(self) -> dict[str, Any]:
        """`Proxy` (health, agent) / `ServiceProxy` (catalog): the docs' empty block when none."""
        if self.proxy is None:
            return {
                "DestinationServiceName": "",
                "DestinationServiceID": "",
                "LocalServiceAddress": "",
                "LocalServicePort": 0,
                "Config": None,
                "Upstreams": None,
            }
        return copy.deepcopy(self.proxy)

    def same(self, other: Service) -> bool:
        return (
            self.node == other.node
            and self.id == other.id
            and self.name == other.name
            and self.tags == other.tags
            and self.address == other.address
            and self.port == other.port
            and self.tagged_addresses == other.tagged_addresses
            and self.meta == other.meta
            and self.weights == other.weights
            and self.enable_tag_override == other.enable_tag_override
            and self.kind == other.kind
            and self.proxy == other.proxy
            and self.connect_native == other.connect_native
            and self.locality == other.locality
        )

    def health_json(self) -> dict[str, Any]:
        """The `Service` object of /v1/health/service entries (a NodeService)."""
        out: dict[str, Any] = {}
        if self.kind:  # omitempty
            out["Kind"] = self.kind
        out |= {
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
        }
        if self.tagged_addresses:
            out["TaggedAddresses"] = copy.deepcopy(self.tagged_addresses)
        out["Meta"] = dict(self.meta)
        if self.port:
            out["Port"] = self.port
        out["Weights"] = dict(self.weights)
        out.update(self._mesh_json())
        if self.locality is not None:  # omitempty
            out["Locality"] = self.locality_json()
        out["Namespace"] = NAMESPACE
        out["CreateIndex"] = self.create_index
        out["ModifyIndex"] = self.modify_index
        return out

    def locality_json(self) -> dict[str, str] | None:
        """`Locality` as Consul renders it: Region and Zone omitted when empty; the whole
        field omitted (NodeService) or null (ServiceNode) when not set."""
        if self.locality is None:
            return None
        return {k: v for k, v in self.locality.items() if k in ("Region", "Zone") and v}

    def _mesh_json(self) -> dict[str, Any]:
        """`Proxy` and `Connect` of a NodeService, rendered only when they say something (the
        docs' samples of typical services show neither)."""
        out: dict[str, Any] = {}
        if self.proxy is not None:
            out["Proxy"] = self.proxy_json()
        if self.connect_native:
            out["Connect"] = {"Native": True}
        return out

    def agent_json(self, datacenter: str) -> dict[str, Any]:
        """An entry of /v1/agent/services."""
        kind = {"Kind": self.kind} if self.kind else {}
        return kind | {
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "TaggedAddresses": copy.deepcopy(self.tagged_addresses),
            "Meta": dict(self.meta),
            "Namespace": NAMESPACE,
            "Port": self.port,
            "Address": self.address,
            "EnableTagOverride": self.enable_tag_override,
            "Datacenter": datacenter,
            "Weights": dict(self.weights),
            **self._mesh_json(),
            **({"Locality": self.locality_json()} if self.locality is not None else {}),
        }

    def catalog_json(self, node: Node) -> dict[str, Any]:
        """An entry of /v1/catalog/service/:name (a ServiceNode)."""
        out: dict[str, Any] = {
            "ID": node.id,
            "Node": node.name,
            "Address": node.address,
            "Datacenter": node.datacenter,
            "TaggedAddresses": dict(node.tagged_addresses)
            if node.tagged_addresses is not None
            else None,
            "NodeMeta": dict(node.meta) if node.meta is not None else None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "ServiceAddress": self.address,
            "ServiceEnableTagOverride": self.enable_tag_override,
            "ServiceID": self.id,
            "ServiceKind": self.kind,
            "ServiceName": self.name,
            "ServicePort": self.port,
            "ServiceMeta": dict(self.meta),
            "ServiceWeights": dict(self.weights),
        }
        if self.tagged_addresses:
            out["ServiceTaggedAddresses"] = copy.deepcopy(self.tagged_addresses)
        out["ServiceTags"] = list(self.tags)
        out["ServiceProxy"] = self.proxy_json()
        out["ServiceConnect"] = {"Native": self.connect_native, "Proxy": None}
        out["ServiceLocality"] = self.locality_json()
        out["Namespace"] = NAMESPACE
        return out


@dataclass
class Check:
    node: str
    check_id: str
    name: str
    status: str = "critical"
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    type: str = ""
    definition: dict[str, Any] = field(default_factory=dict)
    # Run by the double's agent: an alias check's status follows what it aliases. Checks
    # written through the catalog are never run by anyone, as in Consul.
    agent: bool = False
    create_index: int = 0
    modify_index: int = 0

    @property
    def alias_of(self) -> tuple[str, str] | None:
        """(node or "" for the check's own, service ID) of a running alias check."""
        if not self.agent or self.type != "alias" or not self.definition.get("AliasService"):
            return None
        return str(self.definition.get("AliasNode") or ""), str(self.definition["AliasService"])

    def same(self, other: Check) -> bool:
        return (
            self.node == other.node
            and self.check_id == other.check_id
            and self.name == other.name
            and self.status == other.status
            and self.notes == other.notes
            and self.output == other.output
            and self.service_id == other.service_id
            and self.service_name == other.service_name
            and self.service_tags == other.service_tags
            and self.definition == other.definition
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "Node": self.node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(self.service_tags),
            "Namespace": NAMESPACE,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }
