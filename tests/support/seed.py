"""Put operator documents straight into a SQLite store before a server starts on it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xds_server.store.interface import Change
from xds_server.store.sqlite import SqliteStore


def seed_store(path: Path, documents: Iterable[dict[str, Any]]) -> int:
    """Commit ``documents`` in one revision; returns it."""

    async def run() -> int:
        store = SqliteStore(path)
        await store.open()
        try:
            changes = [Change(d["kind"], d["name"], d["spec"]) for d in documents]
            return (await store.commit(changes, actor="test")).revision
        finally:
            await store.close()

    return asyncio.run(run())


def listener(name: str, port: int) -> dict[str, Any]:
    return {"kind": "Listener", "name": name, "spec": {"address": "127.0.0.1", "port": port}}


def route(name: str, listener_name: str, service: str, hostname: str = "*") -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "spec": {
            "listeners": [listener_name],
            "hostnames": [hostname],
            "rules": [{"matches": [{"path": {"prefix": "/"}}], "backends": [{"service": service}]}],
        },
    }
