"""One datacenter's catalog (nodes, service instances, checks) with Consul's index rules.

Index rules (from Consul's state store, which blocking queries compare against):
- every applied write gets the next Raft index (the caller passes it in);
- tables `nodes`, `services`, `checks` remember the last index that changed them;
- each service name has its own index, bumped by any change to one of its instances, to the
  instances' checks, to their nodes or to node-level checks of those nodes. So a change to
  another service never moves it. When the last instance goes, the name's index is dropped and
  the datacenter's "extinction" index is set; a missing service reports that index (or, if no
  service ever went extinct, the max of the three tables), like `maxIndexAndWatchChForService`;
- a write that changes nothing (same node, service or check) leaves all of those untouched;
- mesh: a service name's "connect" index (what /v1/health/connect/:service and
  /v1/catalog/connect/:service block on) moves with any change to an instance that is a mesh
  endpoint of it — a connect-proxy whose Proxy.DestinationServiceName is the name, or a
  Connect-native instance of it — as the name's own index does for its instances;
- alias checks registered through the agent follow what they alias (the worst status of
  the aliased instance's checks and of its node's checks; passing without checks; critical
  when the instance is gone), written at the index of the write that moved them (a real agent
  syncs them a moment later).
Names of services are matched case-insensitively, as Consul's memdb indexes do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from .model import Check, Node, Service
from .raft import Raft

__all__ = ["Catalog", "CatalogError"]

_STATUS_RANK = {"passing": 0, "warning": 1, "critical": 2}


class CatalogError(Exception):
    """A rejected write (the HTTP layer answers 500 with the text, like an RPC error)."""


class Catalog:
    def __init__(self, raft: Raft, datacenter: str) -> None:
        self.raft = raft
        self.datacenter = datacenter
        self.nodes: dict[str, Node] = {}
        self.services: dict[str, dict[str, Service]] = {}  # node -> service id -> instance
        self.checks: dict[str, dict[str, Check]] = {}  # node -> check id -> check
        self.by_name: dict[str, set[tuple[str, str]]] = {}  # lower(name) -> {(node, id)}
        self.name_index: dict[str, int] = {}
        self.extinction_index = 0
        self.connect_index: dict[str, int] = {}  # lower(destination) -> index
        self.aliases: set[tuple[str, str]] = set()  # (node, check id) of running alias checks
        self._refreshing = False
        self._services_cache: dict[str, list[str]] | None = None

    # -- bookkeeping ------------------------------------------------------------------------

    def _touch_name(self, name: str, index: int) -> None:
        key = name.lower()
        if self.by_name.get(key):
            self.name_index[key] = index
        self.raft.touched.add(("svc", key))
        for node, service_id in self.by_name.get(key, ()):
            self._touch_connect(self.services[node][service_id], index)

    def _touch_connect(self, svc: Service, index: int) -> None:
        if destination := svc.destination.lower():
            self.connect_index[destination] = index
            self.raft.touched.add(("connect", destination))

    def _touch_services_table(self, index: int) -> None:
        self.raft.touch_table("services", index)
        self._services_cache = None

    def _touch_node_services(self, node: str, index: int) -> None:
        for svc in self.services.get(node, {}).values():
            self._touch_name(svc.name, index)

    # -- writes -----------------------------------------------------------------------------

    def ensure_node(self, index: int, node: Node) -> None:
        existing = self.nodes.get(node.name)
        if existing is not None and existing.same(node):
            return
        node.create_index = existing.create_index if existing else index
        node.modify_index = index
        self.nodes[node.name] = node
        self.services.setdefault(node.name, {})
        self.checks.setdefault(node.name, {})
        self.raft.touch_table("nodes", index)
        self._touch_node_services(node.name, index)

    def ensure_service(self, index: int, svc: Service) -> None:
        if svc.node not in self.nodes:
            raise CatalogError("Missing node registration")
        existing = self.services[svc.node].get(svc.id)
        if existing is not None and existing.same(svc):
            return
        svc.create_index = existing.create_index if existing else index
        svc.modify_index = index
        self.services[svc.node][svc.id] = svc
        self.by_name.setdefault(svc.name.lower(), set()).add((svc.node, svc.id))
        if existing is not None and existing.name.lower() != svc.name.lower():
            self._forget_instance(index, existing)
        if existing is not None:
            self._touch_connect(existing, index)  # it may have fronted another service
        # Checks carry their service's name and tags.
        for chk in self.checks[svc.node].values():
            if chk.service_id == svc.id:
                chk.service_name = svc.name
                chk.service_tags = list(svc.tags)
        self._touch_services_table(index)
        self._touch_name(svc.name, index)
        self._refresh_aliases(index)

    def ensure_check(self, index: int, chk: Check) -> None:
        if chk.node not in self.nodes:
            raise CatalogError("Missing node registration")
        if chk.service_id:
            svc = self.services[chk.node].get(chk.service_id)
            if svc is None:
                raise CatalogError("Missing service registration")
            chk.service_name = svc.name
            chk.service_tags = list(svc.tags)
        else:
            chk.service_name = ""
            chk.service_tags = []
        existing = self.checks[chk.node].get(chk.check_id)
        if existing is not None and existing.same(chk):
            return
        chk.create_index = existing.create_index if existing else index
        chk.modify_index = index
        self.checks[chk.node][chk.check_id] = chk
        self.raft.touch_table("checks", index)
        self._touch_check_owner(index, chk)
        if existing is not None and existing.service_id != chk.service_id:
            self._touch_check_owner(index, existing)
        if chk.alias_of is not None:
            self.aliases.add((chk.node, chk.check_id))
        self._refresh_aliases(index)

    def _refresh_aliases(self, index: int) -> None:
        """Bring every running alias check in line with what it aliases (to a fixed point:
        an alias may alias a service that has alias checks of its own)."""
        if self._refreshing or not self.aliases:
            return
        self._refreshing = True
        try:
            for _ in range(len(self.aliases) + 1):
                moved = False
                for node, check_id in sorted(self.aliases):
                    chk = self.checks.get(node, {}).get(check_id)
                    if chk is None or chk.alias_of is None:
                        self.aliases.discard((node, check_id))
                        continue
                    status, output = self._alias_status(chk, *chk.alias_of)
                    if (chk.status, chk.output) != (status, output):
                        self.ensure_check(
                            index, dataclasses.replace(chk, status=status, output=output)
                        )
                        moved = True
                if not moved:
                    break
        finally:
            self._refreshing = False

    def _alias_status(self, alias: Check, node: str, service_id: str) -> tuple[str, str]:
        target_node = node or alias.node
        if service_id not in self.services.get(target_node, {}):
            return "critical", f'Service "{service_id}" not found'
        statuses = [
            c.status
            for c in self.checks.get(target_node, {}).values()
            if c.service_id in ("", service_id) and c is not alias
        ]
        if not statuses:
            return "passing", "No checks found."
        worst = max(statuses, key=lambda s: _STATUS_RANK.get(s, 2))
        return worst, f"Aliased service {service_id!r} is {worst}"

    def update_check(self, index: int, node: str, check_id: str, **changes: Any) -> bool:
        """Change some fields of an existing check; False if it does not exist."""
        existing = self.checks.get(node, {}).get(check_id)
        if existing is None:
            return False
        self.ensure_check(index, dataclasses.replace(existing, **changes))
        return True

    def _touch_check_owner(self, index: int, chk: Check) -> None:
        if chk.service_id:
            svc = self.services.get(chk.node, {}).get(chk.service_id)
            if svc is not None:
                self._touch_name(svc.name, index)
        else:
            self._touch_node_services(chk.node, index)

    def delete_check(self, index: int, node: str, check_id: str) -> None:
        chk = self.checks.get(node, {}).pop(check_id, None)
        if chk is None:
            return
        self.raft.touch_table("checks", index)
        self._touch_check_owner(index, chk)
        self.aliases.discard((node, check_id))
        self._refresh_aliases(index)

    def delete_service(self, index: int, node: str, service_id: str) -> None:
        svc = self.services.get(node, {}).get(service_id)
        if svc is None:
            return
        for chk in [c for c in self.checks[node].values() if c.service_id == service_id]:
            del self.checks[node][chk.check_id]
            self.raft.touch_table("checks", index)
        del self.services[node][service_id]
        self._forget_instance(index, svc)
        self._touch_services_table(index)
        self._refresh_aliases(index)

    def _forget_instance(self, index: int, svc: Service) -> None:
        key = svc.name.lower()
        members = self.by_name.get(key, set())
        members.discard((svc.node, svc.id))
        if members:
            self._touch_name(svc.name, index)
            self._touch_connect(svc, index)
            return
        self.by_name.pop(key, None)
        self.name_index.pop(key, None)
        self.extinction_index = index
        self.raft.touched.add(("svc", key))
        self.raft.touched.add(("extinct",))
        self._touch_connect(svc, index)

    def delete_node(self, index: int, node: str) -> None:
        if node not in self.nodes:
            return
        for service_id in list(self.services.get(node, {})):
            self.delete_service(index, node, service_id)
        if self.checks.get(node):
            self.raft.touch_table("checks", index)
        del self.nodes[node]
        self.services.pop(node, None)
        self.checks.pop(node, None)
        self.raft.touch_table("nodes", index)

    def clamp_indexes(self, to: int) -> None:
        """Make every stored index <= `to` (a restore of an older snapshot)."""
        records: Iterable[Node | Service | Check] = [
            *self.nodes.values(),
            *(s for per_node in self.services.values() for s in per_node.values()),
            *(c for per_node in self.checks.values() for c in per_node.values()),
        ]
        for rec in records:
            rec.create_index = min(rec.create_index, to)
            rec.modify_index = min(rec.modify_index, to)
        for key, value in self.name_index.items():
            self.name_index[key] = min(value, to)
        for key, value in self.connect_index.items():
            self.connect_index[key] = min(value, to)
        self.extinction_index = min(self.extinction_index, to)

    # -- reads ------------------------------------------------------------------------------

    def instances(self, name: str) -> list[Service]:
        pairs = sorted(self.by_name.get(name.lower(), ()))
        return [self.services[node][sid] for node, sid in pairs]

    def service_index(self, name: str) -> int:
        key = name.lower()
        if self.by_name.get(key):
            return self.name_index.get(key, 0)
        if self.extinction_index:
            return self.extinction_index
        tables = self.raft.tables
        return max(tables["nodes"], tables["services"], tables["checks"])

    def connect_instances(self, name: str) -> list[Service]:
        """The mesh endpoints of `name`: its connect-proxies and Connect-native instances."""
        key = name.lower()
        return [
            svc
            for node in sorted(self.services)
            for _, svc in sorted(self.services[node].items())
            if svc.destination.lower() == key
        ]

    def connect_service_index(self, name: str) -> int:
        key = name.lower()
        if key in self.connect_index:
            return self.connect_index[key]
        if self.extinction_index:
            return self.extinction_index
        tables = self.raft.tables
        return max(tables["nodes"], tables["services"], tables["checks"])

    def checks_for(self, svc: Service) -> list[Check]:
        """Node-level checks first, then the instance's own, each sorted by ID (as Consul)."""
        node_checks = self.checks.get(svc.node, {})
        own = sorted(
            (c for c in node_checks.values() if c.service_id in ("", svc.id)),
            key=lambda c: (c.service_id != "", c.check_id),
        )
        return own

    def health_entries(self, name: str, connect: bool = False) -> list[dict[str, Any]]:
        """/v1/health/service/:name, or with `connect` /v1/health/connect/:name."""
        out = []
        for svc in self.connect_instances(name) if connect else self.instances(name):
            out.append(
                {
                    "Node": self.nodes[svc.node].to_json(),
                    "Service": svc.health_json(),
                    "Checks": [c.to_json() for c in self.checks_for(svc)],
                }
            )
        return out

    def catalog_service_entries(self, name: str, connect: bool = False) -> list[dict[str, Any]]:
        """/v1/catalog/service/:name, or with `connect` /v1/catalog/connect/:name."""
        instances = self.connect_instances(name) if connect else self.instances(name)
        return [svc.catalog_json(self.nodes[svc.node]) for svc in instances]

    def all_catalog_service_entries(self) -> list[dict[str, Any]]:
        return [
            svc.catalog_json(self.nodes[node])
            for node in sorted(self.services)
            for _, svc in sorted(self.services[node].items())
        ]

    def service_tags(self) -> dict[str, list[str]]:
        """/v1/catalog/services: every service name with the union of its tags."""
        if self._services_cache is None:
            tags: dict[str, set[str]] = {}
            for per_node in self.services.values():
                for svc in per_node.values():
                    tags.setdefault(svc.name, set()).update(svc.tags)
            self._services_cache = {name: sorted(tags[name]) for name in sorted(tags)}
        return {name: list(t) for name, t in self._services_cache.items()}

    def node_list(self) -> list[dict[str, Any]]:
        return [self.nodes[name].to_json() for name in sorted(self.nodes)]

    def all_checks(self) -> list[Check]:
        return [chk for node in sorted(self.checks) for _, chk in sorted(self.checks[node].items())]

    def find_service(self, service_id: str, node: str | None = None) -> Service | None:
        for node_name, per_node in sorted(self.services.items()):
            if node is not None and node_name != node:
                continue
            if service_id in per_node:
                return per_node[service_id]
        return None
