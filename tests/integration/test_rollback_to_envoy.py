"""``POST /v1/rollback`` restores exactly an earlier revision's documents, and Envoy follows.

Revisions change one route's backend (v1 .. v5) while retry policies come and go; rolling
back to the revision of v2 must give back exactly that revision's documents (as remembered
from the writes and as replayed from ``GET /v1/history``) and route Envoy to v2 again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.rest_stack import (
    KIND_PATHS,
    Api,
    Traffic,
    converge,
    envoy_config,
    listener,
    registry_yaml,
    route,
    start_server,
    to,
)
from tests.support.envoy import Envoy, free_port, running_envoy
from tests.support.upstream import upstreams

pytestmark = pytest.mark.envoy

VERSIONS = ("v1", "v2", "v3", "v4", "v5")
Documents = dict[tuple[str, str], dict[str, Any]]


@dataclass
class Stack:
    api: Api
    envoy: Envoy
    traffic: Traffic


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with upstreams(*VERSIONS) as started:
        registry = tmp_path / "registry.yaml"
        registry.write_text(registry_yaml({up.name: [up] for up in started}))
        server = start_server(registry, tmp_path / "store.db")
        try:
            with running_envoy(envoy_config(server.ads_port)) as envoy:
                api, traffic = Api(server.admin), Traffic(free_port())
                try:
                    yield Stack(api, envoy, traffic)
                finally:
                    api.close()
                    traffic.close()
        finally:
            server.kill()


def all_documents(api: Api) -> Documents:
    """Every stored document, as ``(kind, name) -> spec``."""
    return {(kind, doc["name"]): doc["spec"] for kind in KIND_PATHS for doc in api.list_all(kind)}


def replay(history: list[dict[str, Any]], revision: int) -> Documents:
    """The documents of ``revision``, rebuilt from history entries (oldest first)."""
    documents: Documents = {}
    for entry in history:
        if entry["revision"] > revision:
            break
        key = (entry["kind"], entry["name"])
        if entry["after"] is None:
            documents.pop(key, None)
        else:
            documents[key] = entry["after"]
    return documents


def answers(traffic: Traffic, version: str) -> Callable[[], bool]:
    return lambda: traffic.body("app.test") == version


def test_rollback_restores_a_revision_in_the_store_and_in_envoy(stack: Stack) -> None:
    api, traffic = stack.api, stack.traffic
    api.put(listener("public", stack.traffic.port))
    early = {"kind": "RetryPolicy", "name": "early", "spec": {"num_retries": 1}}
    api.put(early)

    snapshots: dict[str, Documents] = {}  # version -> every document right after its write
    revisions: dict[str, int] = {}
    for version in VERSIONS:
        if version == "v3":
            api.delete("RetryPolicy", "early")  # exists at v2, gone later
        if version == "v4":
            api.put({"kind": "RetryPolicy", "name": "late", "spec": {"num_retries": 3}})
        stored = api.put(route("app", ["app.test"], [{"backends": to(version)}]))
        converge(
            f"revision {stored['revision']} ({version}) -> Envoy",
            answers(traffic, version),
            stack.envoy,
        )
        revisions[version] = stored["revision"]
        snapshots[version] = all_documents(api)
    print("revisions:", revisions)
    assert ("RetryPolicy", "early") in snapshots["v2"]
    assert ("RetryPolicy", "late") not in snapshots["v2"]

    history = api.history()
    target = revisions["v2"]
    for version, revision in revisions.items():
        assert replay(history, revision) == snapshots[version]  # history tells the same

    latest = api.revision()
    answer = api.post("/v1/rollback", {"revision": target})
    converge(
        f"rollback to revision {target} -> Envoy routes to v2",
        answers(traffic, "v2"),
        stack.envoy,
    )
    assert {traffic.body("app.test") for _ in range(20)} == {"v2"}
    assert answer["revision"] == latest + 1  # a new revision, history kept
    changes = {(c["kind"], c["name"]): c["operation"] for c in answer["changes"]}
    assert changes == {
        ("Route", "app"): "updated",
        ("RetryPolicy", "early"): "created",
        ("RetryPolicy", "late"): "deleted",
    }
    assert all_documents(api) == snapshots["v2"] == replay(api.history(), answer["revision"])
    assert api.get("Route", "app")["revision"] == answer["revision"]

    # Rolling forward is a rollback too: to the revision of v5.
    api.post("/v1/rollback", {"revision": revisions["v5"]})
    converge(
        f"rollback to revision {revisions['v5']} -> Envoy routes to v5",
        answers(traffic, "v5"),
        stack.envoy,
    )
    assert all_documents(api) == snapshots["v5"]
