"""A ``Route`` attached to a mesh upstream, with real Envoys (issue 15: routes apply to mesh
traffic exactly as at the edge).

``frontend`` calls ``api``; a route with ``upstreams: [api]`` sends calls carrying
``x-canary: 1`` to ``api-v2`` (a mesh service with its own sidecar and application) with a
retry policy, and every other call still reaches ``api``. Each call crosses frontend's
sidecar, mutual TLS and the receiving sidecar's RBAC.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.mesh_stack import (
    INBOUND_PORT,
    Layout,
    MeshStack,
    answer_of,
    healthy_hosts,
    intention,
    mesh,
    mesh_stack,
    sidecar,
    static_registry_in,
    wait_ready,
)
from tests.support import netns
from tests.support.envoy import wait_for

pytestmark = pytest.mark.envoy

API_PORT = 9001
LAYOUT = (Layout("frontend-1", "frontend"), Layout("api-1", "api"), Layout("api-v2-1", "api-v2"))
CANARY = {
    "kind": "Route",
    "name": "canary",
    "spec": {
        "upstreams": ["api"],
        "rules": [
            {
                "matches": [{"headers": [{"name": "x-canary", "exact": "1"}]}],
                "backends": [{"service": "api-v2"}],
                "retry": {"retry_on": ["5xx"], "num_retries": 2},
            }
        ],
    },
}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshStack]:
    netns.require()
    directory = tmp_path_factory.mktemp("mesh-routes")
    with mesh_stack(LAYOUT, directory / "store.db", static_registry_in(directory)) as stack:
        stack.put("mesh", mesh())
        stack.put("sidecars/frontend", sidecar("frontend", upstreams=[("api", API_PORT, "http")]))
        for service in ("api", "api-v2"):
            stack.put(f"sidecars/{service}", sidecar(service))
            stack.put(
                f"intentions/frontend-to-{service}",
                intention(f"frontend-to-{service}", "frontend", service),
            )
        wait_ready(
            stack,
            {
                "frontend-1": {"mesh-inbound/frontend", "mesh-outbound/frontend/api"},
                "api-1": {"mesh-inbound/api"},
                "api-v2-1": {"mesh-inbound/api-v2"},
            },
        )
        yield stack


def instance_of(stack: MeshStack, **request: Any) -> str:
    app = stack.instances["frontend-1"].app
    answer = app.call_http(f"http://127.0.0.1:{API_PORT}/hello", timeout=3, **request)
    return str(answer_of(answer).get("instance", answer["status"]))


def outbound_routes(stack: MeshStack) -> list[dict[str, Any]]:
    """The routes of frontend's sidecar's route configuration ``mesh-outbound/frontend/api``
    (RDS), as its ``/config_dump`` shows them; ``[]`` while it has none."""
    dump = stack.instances["frontend-1"].sidecar.config_dump()
    for config in dump["configs"]:
        if config["@type"].endswith("RoutesConfigDump"):
            for entry in config.get("dynamic_route_configs", []):
                route_config = entry["route_config"]
                if route_config["name"] == "mesh-outbound/frontend/api":
                    routes: list[dict[str, Any]] = route_config["virtual_hosts"][0]["routes"]
                    return routes
    return []


def test_a_route_attached_to_an_upstream_sends_canary_calls_to_api_v2(running: MeshStack) -> None:
    wait_for(lambda: instance_of(running) == "api-1", 30, "frontend -> api", running.check_alive)
    # Without the route, the header changes nothing.
    assert instance_of(running, headers={"x-canary": "1"}) == "api-1"

    running.put("routes/canary", CANARY)
    frontend = running.instances["frontend-1"].sidecar
    v2 = {f"{i.host.address}:{INBOUND_PORT}" for i in running.of("api-v2")}
    wait_for(lambda: healthy_hosts(frontend, "mesh/api-v2") == v2, 30, "api-v2's sidecar")
    wait_for(
        lambda: instance_of(running, headers={"x-canary": "1"}) == "api-v2-1",
        30,
        "canary calls reach api-v2",
        running.check_alive,
    )
    for _ in range(10):
        assert instance_of(running, headers={"x-canary": "1"}) == "api-v2-1"
        assert instance_of(running) == "api-1"
        assert instance_of(running, headers={"x-canary": "2"}) == "api-1"

    canary, catch_all = outbound_routes(running)
    assert canary["name"] == "canary.rules[0].matches[0]"
    assert canary["route"]["cluster"] == "mesh/api-v2"
    assert canary["route"]["retry_policy"]["retry_on"] == "5xx"
    assert canary["route"]["retry_policy"]["num_retries"] == 2
    assert catch_all["route"]["cluster"] == "mesh/api"

    # Detaching the route sends everything to api again.
    running.delete("routes/canary")
    wait_for(
        lambda: instance_of(running, headers={"x-canary": "1"}) == "api-1",
        30,
        "canary calls back on api",
        running.check_alive,
    )
