"""An edge Envoy calling a mesh service over mutual TLS with its group's own identity
(issue 15: "an edge listener's route to a mesh service uses mTLS with the edge group's own
identity, so intentions cover traffic from the edge too").

Two test hosts: ``api-1`` runs api's application and its sidecar; ``edge-1`` runs an Envoy
of group ``edge`` that is no sidecar (no ``Sidecar`` document names it) and gets a
``Listener`` with ``groups: [edge]`` and a ``Route`` to api. The test calls the edge listener
from the root namespace, as a client outside the mesh would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.mesh_stack import (
    INBOUND_PORT,
    TRUST_DOMAIN,
    Layout,
    MeshStack,
    answer_of,
    healthy_hosts,
    intention,
    listener_names,
    mesh,
    mesh_stack,
    sidecar,
    static_registry_in,
    wait_ready,
)
from tests.support import netns
from tests.support.envoy import wait_for
from tests.support.mesh_apps import http_call

pytestmark = pytest.mark.envoy

EDGE_PORT = 8000
EDGE_ID = f"spiffe://{TRUST_DOMAIN}/service/edge"
API_ID = f"spiffe://{TRUST_DOMAIN}/service/api"
LAYOUT = (Layout("api-1", "api"), Layout("edge-1", "edge"))


@pytest.fixture(scope="module")
def edge_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshStack]:
    netns.require()
    directory = tmp_path_factory.mktemp("edge-mesh")
    with mesh_stack(LAYOUT, directory / "store.db", static_registry_in(directory)) as running:
        running.put("mesh", mesh())
        running.put("sidecars/api", sidecar("api"))
        running.put(
            "listeners/edge-in",
            {
                "kind": "Listener",
                "name": "edge-in",
                "spec": {"port": EDGE_PORT, "groups": ["edge"]},
            },
        )
        running.put(
            "routes/to-api",
            {
                "kind": "Route",
                "name": "to-api",
                "spec": {"listeners": ["edge-in"], "rules": [{"backends": [{"service": "api"}]}]},
            },
        )
        wait_ready(running, {"api-1": {"mesh-inbound/api"}})
        edge = running.instances["edge-1"].sidecar
        wait_for(
            lambda: "edge-in" in listener_names(edge), 60, "the edge listener", running.check_alive
        )
        api = {f"{i.host.address}:{INBOUND_PORT}" for i in running.of("api")}
        wait_for(lambda: healthy_hosts(edge, "api") == api, 30, "api's sidecar behind the edge")
        yield running


def calls(running: MeshStack) -> Callable[[], dict[str, Any]]:
    """A client outside the mesh (the root namespace) calling the edge listener."""
    address = running.instances["edge-1"].host.address
    return lambda: http_call({"url": f"http://{address}:{EDGE_PORT}/hello", "timeout": 3})


def test_intentions_decide_what_the_edge_may_call(edge_mesh: MeshStack) -> None:
    call = calls(edge_mesh)
    denied = call()
    assert denied["status"] == 403, denied
    assert "RBAC" in denied["body"]  # api's sidecar refused the edge's identity

    edge_mesh.put("intentions/edge-to-api", intention("edge-to-api", "edge", "api"))
    wait_for(lambda: call()["status"] == 200, 10, "edge -> api allowed", edge_mesh.check_alive)
    answer = call()
    assert answer["status"] == 200, answer
    seen = answer_of(answer)
    assert seen["instance"] == "api-1"
    xfcc = seen["headers"]["x-forwarded-client-cert"]
    assert f"URI={EDGE_ID}" in xfcc and f"By={API_ID}" in xfcc, xfcc
    # The edge Envoy holds its group's identity, and api's sidecar handshook with it.
    assert EDGE_ID in edge_mesh.instances["edge-1"].sidecar.get("/certs")
    api = edge_mesh.instances["api-1"].sidecar
    assert api.stat(f"listener.0.0.0.0_{INBOUND_PORT}.ssl.handshake") > 0

    edge_mesh.delete("intentions/edge-to-api")
    wait_for(lambda: call()["status"] == 403, 10, "edge -> api denied again")
