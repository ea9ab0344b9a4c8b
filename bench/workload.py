"""The benchmark workload: services x endpoints, and the operator config routing to all of them.

Every scenario serves the same shape: ``services`` services named ``svc-00000``… (the names
the Consul double's ``seed`` gives), each with ``endpoints`` instances on 10.x.y.z addresses,
one listener ``public`` and ``routes`` routes whose rules together send to every service.
The same data is available as a static registry file, as Consul double registrations, as
store documents (seeded into a SQLite file or applied over REST) and as in-memory
``Inventory``/``Config`` values for the in-process translation benchmark.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LISTENER = "public"
LISTENER_PORT = 10000


@dataclass(frozen=True, slots=True)
class Workload:
    services: int = 1000
    endpoints: int = 10
    routes: int = 10

    def service_names(self) -> list[str]:
        return [service_name(i) for i in range(self.services)]

    def endpoint(self, service: int, instance: int) -> tuple[str, int]:
        """The address and port of one instance (the Consul double's ``seed`` layout)."""
        nodes = max(self.endpoints, (self.services * self.endpoints + 9) // 10)
        slot = service * self.endpoints + instance
        k = slot % nodes
        address = f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"
        return address, 20000 + slot // nodes

    # -- registry -------------------------------------------------------------------------

    def registry(self, unhealthy: frozenset[tuple[int, int]] = frozenset()) -> dict[str, Any]:
        services: dict[str, Any] = {}
        for i in range(self.services):
            endpoints = []
            for j in range(self.endpoints):
                address, port = self.endpoint(i, j)
                entry: dict[str, Any] = {"address": address, "port": port}
                if (i, j) in unhealthy:
                    entry["health"] = "unhealthy"
                endpoints.append(entry)
            services[service_name(i)] = {"endpoints": endpoints}
        return {"services": services}

    def write_registry(
        self, path: Path, unhealthy: frozenset[tuple[int, int]] = frozenset()
    ) -> None:
        """Write the static registry file atomically (the source reloads on change)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.registry(unhealthy), sort_keys=True))
        tmp.replace(path)

    # -- operator config ------------------------------------------------------------------

    def listener_document(self) -> dict[str, Any]:
        return {
            "kind": "Listener",
            "name": LISTENER,
            "spec": {"address": "0.0.0.0", "port": LISTENER_PORT, "access_log": False},
        }

    def route_document(self, index: int, timeout: str = "15s") -> dict[str, Any]:
        """Route ``index`` sends ``/svc-NNNNN`` to ``svc-NNNNN`` for its share of services."""
        names = self.service_names()[index :: self.routes]
        return {
            "kind": "Route",
            "name": route_name(index),
            "spec": {
                "listeners": [LISTENER],
                "hostnames": [f"{route_name(index)}.example.com"],
                "rules": [
                    {
                        "matches": [{"path": {"prefix": f"/{name}"}}],
                        "backends": [{"service": name}],
                        "timeouts": {"request": timeout},
                    }
                    for name in names
                ],
            },
        }

    def documents(self) -> list[dict[str, Any]]:
        return [self.listener_document()] + [self.route_document(i) for i in range(self.routes)]

    # -- in-process values (translate benchmark) ------------------------------------------

    def inventory(self) -> Any:
        from xds_server.model.inventory import Endpoint, Inventory, Service

        services = {}
        for i in range(self.services):
            endpoints = tuple(
                Endpoint(address=a, port=p)
                for a, p in sorted(self.endpoint(i, j) for j in range(self.endpoints))
            )
            services[service_name(i)] = Service(service_name(i), endpoints)
        return Inventory.of(services)

    def config(self) -> Any:
        from xds_server.model.config import Config

        return Config.from_documents(
            (doc["kind"], doc["name"], doc["spec"], n + 1) for n, doc in enumerate(self.documents())
        )


def service_name(index: int) -> str:
    return f"svc-{index:05d}"


def route_name(index: int) -> str:
    return f"r{index:03d}"


# -- getting the config into the server -----------------------------------------------------


def seed_store(path: Path, documents: list[dict[str, Any]]) -> int:
    """Write ``documents`` into a new SQLite store file (before the server starts)."""
    from xds_server.store.interface import Change
    from xds_server.store.sqlite import SqliteStore

    async def seed() -> int:
        store = SqliteStore(str(path))
        await store.open()
        try:
            changes = [Change(d["kind"], d["name"], d["spec"]) for d in documents]
            result = await store.commit(changes, "bench")
            return result.revision
        finally:
            await store.close()

    return asyncio.run(seed())


class AdminClient:
    """The REST admin API, with the standard library only (the bench stays light)."""

    def __init__(self, base: str, timeout: float = 60.0) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except ValueError:
                return error.code, raw.decode(errors="replace")

    def has_config_api(self) -> bool:
        status, _ = self.request("GET", "/v1/routes")
        return status == 200

    def apply(self, documents: list[dict[str, Any]]) -> None:
        status, body = self.request("POST", "/v1/apply", documents)
        if status >= 300:
            raise RuntimeError(f"POST /v1/apply: {status} {body}")

    def put(self, document: dict[str, Any]) -> None:
        path = {"Route": "routes", "Listener": "listeners"}[document["kind"]]
        status, body = self.request("PUT", f"/v1/{path}/{document['name']}", document)
        if status >= 300:
            raise RuntimeError(f"PUT /v1/{path}/{document['name']}: {status} {body}")
