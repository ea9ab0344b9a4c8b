"""The admin API in process, over a memory or SQLite store, for the ``test_admin_*`` tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from xds_server.admin.app import create_admin_app
from xds_server.admin.context import AdminContext, Preview
from xds_server.model import Config, Endpoint, Inventory, Service
from xds_server.store import ConfigStore, MemoryStore, SqliteStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "api" / "examples"
PROBLEM_JSON = "application/problem+json"
YAML = {"content-type": "application/yaml"}

#: The URL segment of each example file's document.
EXAMPLE_PATHS = {
    "listener.yaml": "listeners",
    "retry-policy.yaml": "retry-policies",
    "route.yaml": "routes",
    "service-policy.yaml": "service-policies",
}


def inventory() -> Inventory:
    """Every service the examples use has an instance, except ``empty``."""
    services = {
        name: Service(name, (Endpoint("10.0.0.1", 8080),))
        for name in ("api", "api-v2", "catalog", "assets", "web", "web-v2")
    }
    services["empty"] = Service("empty")
    return Inventory.of(services)


def fake_preview(before: Config, after: Config) -> dict[str, Any]:
    """What a translator would report, reduced to which documents differ."""

    def documents(config: Config) -> dict[str, Any]:
        return {f"{d.kind}/{d.name}": d.spec for d, _ in config.documents()}

    old, new = documents(before), documents(after)
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    return {"changed": changed}


@dataclass
class Api:
    client: httpx.AsyncClient
    store: ConfigStore
    previews: list[tuple[Config, Config]] = field(default_factory=list)

    async def put(self, path: str, document: Mapping[str, Any], **kw: Any) -> httpx.Response:
        return await self.client.put(f"/v1/{path}", json=dict(document), **kw)

    async def revision(self) -> int:
        return self.store.current().revision


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


def listener(name: str = "public", port: int = 8080, **spec: Any) -> dict[str, Any]:
    return {"kind": "Listener", "name": name, "spec": {"port": port, **spec}}


def route(
    name: str = "web",
    listeners: tuple[str, ...] = ("public",),
    services: tuple[str, ...] = ("web",),
    **spec: Any,
) -> dict[str, Any]:
    rules = spec.pop("rules", None) or [{"backends": [{"service": s} for s in services]}]
    return {
        "kind": "Route",
        "name": name,
        "spec": {"listeners": list(listeners), "rules": rules, **spec},
    }


def retry_policy(name: str = "default", **spec: Any) -> dict[str, Any]:
    return {"kind": "RetryPolicy", "name": name, "spec": {"num_retries": 2, **spec}}


def service_policy(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {"kind": "ServicePolicy", "name": name, "spec": {"connect_timeout": "1s", **spec}}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem details of an error response, checked for their RFC 9457 shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:xds-server:problem:")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    for error in body["errors"]:
        assert isinstance(error["field"], str)
        assert isinstance(error["reason"], str) and error["reason"]
    return body


def reason_at(problem: Mapping[str, Any], field: str) -> str:
    for error in problem["errors"]:
        if error["field"] == field:
            reason: str = error["reason"]
            return reason
    raise AssertionError(f"no error at {field!r}: {problem['errors']}")


def new_store(kind: str, tmp_path: Path) -> ConfigStore:
    return MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "config.db")


@asynccontextmanager
async def running_api(
    store: ConfigStore,
    *,
    inventory_: Inventory | None = None,
    preview_: Preview = fake_preview,
    **context: Any,
) -> AsyncIterator[Api]:
    """The API over ``store`` (opened here, closed after); every preview call is recorded."""
    await store.open()
    inv = inventory_ if inventory_ is not None else inventory()
    previews: list[tuple[Config, Config]] = []

    def preview(before: Config, after: Config) -> dict[str, Any]:
        previews.append((before, after))
        return preview_(before, after)

    app = create_admin_app(
        AdminContext(store=store, inventory=lambda: inv, preview=preview, **context)
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            yield Api(client, store, previews)
    finally:
        await store.close()
