"""A running mesh for the acceptance tests: ``xds-server serve`` in the root namespace and,
per service instance, a test host with the application and its real Envoy sidecar.

Every instance uses the same ports (each host has its own port space): the application on
``APP_PORT`` (bound to ``0.0.0.0`` so the test can ask it to call out), the sidecar's
public mTLS port ``INBOUND_PORT``, its admin on ``netns.SIDECAR_ADMIN_PORT``; upstreams are
reached by the application on ``127.0.0.1:<local_port>`` of its own host.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.integration.test_consul_to_envoy import cluster_hosts as cluster_hosts
from tests.support import netns
from tests.support.envoy import Envoy, wait_for
from tests.support.mesh_apps import MeshApp
from tests.support.process import ServerProcess

APP_PORT = 8080
#: A tcp service's application (the echo).
ECHO_APP_PORT = 9000
INBOUND_PORT = 21000
TRUST_DOMAIN = "mesh.test"


@dataclass(frozen=True)
class Layout:
    """One instance: ``name`` (its node id and the name its application answers with), the
    service it belongs to, and the kind of application (``http`` or ``tcp-echo``)."""

    name: str
    service: str
    kind: str = "http"


@dataclass
class Instance:
    layout: Layout
    host: netns.TestHost
    app: MeshApp
    sidecar: Envoy

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def inbound(self) -> tuple[str, int]:
        """Where other sidecars (and the tests' hostile clients) reach its public port."""
        return self.host.address, INBOUND_PORT


@dataclass
class MeshStack:
    server: ServerProcess
    api: httpx.Client
    instances: dict[str, Instance] = field(default_factory=dict)

    def of(self, service: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.layout.service == service]

    def put(self, path: str, document: Mapping[str, Any]) -> dict[str, Any]:
        response = self.api.put(f"/v1/{path}", json=dict(document))
        assert response.status_code in (200, 201), (path, response.status_code, response.text)
        answer: dict[str, Any] = response.json()
        return answer

    def delete(self, path: str) -> None:
        response = self.api.delete(f"/v1/{path}")
        assert response.status_code in (204, 404), (path, response.status_code, response.text)

    def delete_all(self, path: str) -> None:
        """Every document of a kind (``intentions``)."""
        response = self.api.get(f"/v1/{path}")
        assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            self.delete(f"{path}/{item['name']}")

    def check_alive(self) -> None:
        assert self.server.process is not None
        if self.server.process.poll() is not None:
            raise RuntimeError("xds-server exited:\n" + self.server.rest_of_output())
        for instance in self.instances.values():
            instance.sidecar.check_alive()


# -- documents ----------------------------------------------------------------------------------


def mesh(**spec: Any) -> dict[str, Any]:
    return {"kind": "Mesh", "name": "mesh", "spec": {"trust_domain": TRUST_DOMAIN, **spec}}


def sidecar(
    service: str, protocol: str = "http", upstreams: Sequence[tuple[str, int, str]] = ()
) -> dict[str, Any]:
    local_port = ECHO_APP_PORT if protocol == "tcp" else APP_PORT
    return {
        "kind": "Sidecar",
        "name": service,
        "spec": {
            "inbound": {"port": INBOUND_PORT, "local_port": local_port, "protocol": protocol},
            "upstreams": [
                {"service": name, "local_port": port, "protocol": kind}
                for name, port, kind in upstreams
            ],
        },
    }


def intention(name: str, source: str, destination: str, **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Intention",
        "name": name,
        "spec": {"source": source, "destination": destination, **(spec or {"action": "allow"})},
    }


def static_registry(instances: Sequence[tuple[Layout, netns.TestHost]]) -> str:
    """Every instance as an endpoint of its service with its sidecar's port."""
    services: dict[str, list[str]] = {}
    for layout, host in instances:
        port = _app_port(layout)
        services.setdefault(layout.service, []).append(
            f"      - {{address: {host.address}, port: {port}, sidecar_port: {INBOUND_PORT}}}"
        )
    lines = ["services:"]
    for service, endpoints in services.items():
        lines += [f"  {service}:", "    endpoints:", *endpoints]
    return "\n".join(lines) + "\n"


def static_registry_in(
    directory: Path,
) -> Callable[[Sequence[tuple[Layout, netns.TestHost]]], str]:
    """A ``registry`` for ``mesh_stack``: ``static_registry`` written in ``directory``."""

    def registry(placed: Sequence[tuple[Layout, netns.TestHost]]) -> str:
        path = directory / "registry.yaml"
        path.write_text(static_registry(placed))
        return f"static:{path}"

    return registry


# -- starting it --------------------------------------------------------------------------------


def start_server(
    root_address: str, store: Path, registry: str, env: Mapping[str, str] | None = None
) -> ServerProcess:
    """The server as an operator starts it, ADS on the test network's root address (where
    the hosts reach it), the admin API on loopback."""
    return ServerProcess(
        "--ads-listen",
        f"{root_address}:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--registry",
        registry,
        "--store",
        f"sqlite:{store}",
        "--log-format",
        "text",
        "--log-level",
        "warning",
        "--debounce",
        "20ms",
        env=dict(env or {}),
    ).start()


@contextlib.contextmanager
def mesh_stack(
    layouts: Sequence[Layout],
    store: Path,
    registry: Callable[[Sequence[tuple[Layout, netns.TestHost]]], str],
    env: Mapping[str, str] | None = None,
) -> Iterator[MeshStack]:
    """One host per instance, the server, each instance's application and sidecar started;
    everything stopped and removed on exit. ``registry(placed)`` prepares the registry for
    the hosts (writes the file, registers in Consul) and returns the ``--registry`` value."""
    with netns.hosts(len(layouts)) as hosts, contextlib.ExitStack() as stack:
        placed = list(zip(layouts, hosts, strict=True))
        server = start_server(hosts[0].root_address, store, registry(placed), env)
        stack.callback(server.kill)
        client = stack.enter_context(httpx.Client(base_url=server.admin, timeout=10))
        running = MeshStack(server, client)
        for layout, host in placed:
            app = stack.enter_context(
                MeshApp(layout.kind, layout.name, host=host, port=_app_port(layout)).start()
            )
            envoy = host.sidecar(layout.service, layout.name, server.ads_port).start()
            running.instances[layout.name] = Instance(layout, host, app, envoy)
        yield running


def _app_port(layout: Layout) -> int:
    return ECHO_APP_PORT if layout.kind == "tcp-echo" else APP_PORT


# -- what the sidecars hold ---------------------------------------------------------------------


def listener_names(envoy: Envoy) -> set[str]:
    names: set[str] = set()
    for config in envoy.config_dump()["configs"]:
        if config["@type"].endswith("ListenersConfigDump"):
            for entry in config.get("dynamic_listeners", []):
                if "active_state" in entry:
                    names.add(entry["name"])
    return names


def healthy_hosts(envoy: Envoy, cluster: str) -> set[str]:
    return {host for host, flags in cluster_hosts(envoy, cluster).items() if flags == "healthy"}


def wait_ready(running: MeshStack, listeners: Mapping[str, set[str]], timeout: float = 60) -> None:
    """Until each named instance's sidecar has (at least) the given listeners active."""
    for name, wanted in listeners.items():
        envoy = running.instances[name].sidecar
        wait_for(
            lambda envoy=envoy, wanted=wanted: wanted <= listener_names(envoy),  # type: ignore[misc]
            timeout,
            f"{name}'s sidecar listeners {sorted(wanted)}",
            running.check_alive,
        )


def answer_of(call: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON an application answered through the mesh (``{}`` when it was not one)."""
    try:
        found: dict[str, Any] = json.loads(call["body"])
    except (KeyError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def become(
    probe: Callable[[], bool], deadline: float, since: float | None = None, interval: float = 0.02
) -> float | None:
    """Poll ``probe`` until it holds or ``deadline`` seconds passed since ``since`` (a
    ``time.monotonic()``, default now): the seconds it took, or ``None`` when it never held
    (the caller asserts; Envoy offers no event to await)."""
    started = time.monotonic() if since is None else since
    while True:
        if probe():
            return time.monotonic() - started
        if time.monotonic() - started > deadline:
            return None
        time.sleep(interval)
