"""A datacenter: its own Raft index, catalog and KV store (Consul does not share them)."""

from __future__ import annotations

import uuid

from .catalog import Catalog
from .kvstore import KVStore
from .model import Check, Node, Service
from .raft import Raft

__all__ = ["SERF_CHECK_ID", "DatacenterState", "node_id_for", "serf_check"]

SERF_CHECK_ID = "serfHealth"


def node_id_for(datacenter: str, node: str) -> str:
    """A stable UUID for nodes the double invents (Consul agents always have one)."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node}.{datacenter}.consul-double"))


def serf_check(node: str, status: str = "passing") -> Check:
    return Check(
        node=node,
        check_id=SERF_CHECK_ID,
        name="Serf Health Status",
        status=status,
        output="Agent alive and reachable"
        if status == "passing"
        else "Agent not live or unreachable",
        type="",
    )


class DatacenterState:
    def __init__(self, name: str) -> None:
        self.name = name
        self.raft = Raft()
        self.catalog = Catalog(self.raft, name)
        self.kv = KVStore(self.raft)

    def add_server_node(self, node: str, address: str, consul_service: bool) -> None:
        """The node a Consul server runs on: serfHealth and, optionally, the `consul` service."""
        index = self.raft.next_index()
        self.catalog.ensure_node(
            index,
            Node(
                name=node,
                address=address,
                datacenter=self.name,
                id=node_id_for(self.name, node),
                tagged_addresses={
                    "lan": address,
                    "lan_ipv4": address,
                    "wan": address,
                    "wan_ipv4": address,
                },
                meta={"consul-network-segment": ""},
            ),
        )
        self.catalog.ensure_check(index, serf_check(node))
        if consul_service:
            self.catalog.ensure_service(
                index,
                Service(node=node, id="consul", name="consul", port=8300, meta={}),
            )

    def reset_index(self, to: int) -> None:
        self.raft.clamp(to)
        self.catalog.clamp_indexes(to)
        self.kv.clamp_indexes(to)
