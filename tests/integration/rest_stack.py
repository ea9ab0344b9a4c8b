"""xds-server (a subprocess) + a real Envoy + local upstreams, configured through REST only.

Shared by the REST-to-Envoy tests: the registry file of local upstreams, the server
started as an operator starts it, a small REST client that fails loudly on any non-2xx
answer, traffic through Envoy, the three together (``rest_envoy``), and what Envoy and the
server report about the config Envoy holds (``/config_dump``, Envoy's stats, the server's CSDS).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import httpx
from envoy.service.status.v3 import csds_pb2

from tests.support.envoy import Envoy, bootstrap, free_port, running_envoy, wait_for
from tests.support.process import ServerProcess

KIND_PATHS = {
    "Listener": "listeners",
    "Route": "routes",
    "RetryPolicy": "retry-policies",
    "ServicePolicy": "service-policies",
}
CSDS_FETCH = "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus"


class Listening(Protocol):
    """A local server on 127.0.0.1 (``Upstream``, ``GrpcEcho``, ``WebSocketEcho`` …)."""

    @property
    def port(self) -> int: ...


def registry_yaml(services: Mapping[str, Sequence[Listening]]) -> str:
    """A static registry file: each service's instances are the given local servers."""
    lines = ["services:"]
    for service, instances in services.items():
        lines += [f"  {service}:", "    endpoints:"]
        lines += [f"      - {{address: 127.0.0.1, port: {up.port}}}" for up in instances]
    return "\n".join(lines) + "\n"


def start_server(
    registry: Path, store: Path, *, ads_port: int = 0, admin_port: int = 0
) -> ServerProcess:
    return ServerProcess(
        "--ads-listen",
        f"127.0.0.1:{ads_port}",
        "--admin-listen",
        f"127.0.0.1:{admin_port}",
        "--registry",
        f"static:{registry}",
        "--store",
        f"sqlite:{store}",
        "--log-format",
        "text",
        "--log-level",
        "warning",
    ).start()


def envoy_config(ads_port: int, node_id: str = "envoy-test") -> dict[str, Any]:
    """``envoy/bootstrap.yaml`` pointed at ``ads_port``; after losing the control plane,
    Envoy retries the ADS stream every 100-500 ms (instead of up to 30 s) so restarts in
    the tests are quick."""
    config = bootstrap(ads_port, node_id=node_id)
    for service in config["dynamic_resources"]["ads_config"]["grpc_services"]:
        service["envoy_grpc"]["retry_policy"] = {
            "retry_back_off": {"base_interval": "0.1s", "max_interval": "0.5s"}
        }
    return config


class ApiError(AssertionError):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(
            f"{response.request.method} {response.request.url} -> {response.status_code}: "
            f"{response.text}"
        )
        self.response = response


class Api:
    """The REST admin API; every method raises ``ApiError`` unless the answer is 2xx."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if not response.is_success:
            raise ApiError(response)
        return response

    def put(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /v1/{kind}/{name}``: the stored document (with its ``revision``)."""
        path = f"/v1/{KIND_PATHS[document['kind']]}/{document['name']}"
        body: dict[str, Any] = self._checked(self.http.put(path, json=dict(document))).json()
        return body

    def get(self, kind: str, name: str) -> dict[str, Any]:
        response = self._checked(self.http.get(f"/v1/{KIND_PATHS[kind]}/{name}"))
        body: dict[str, Any] = response.json()
        return body

    def delete(self, kind: str, name: str) -> None:
        self._checked(self.http.delete(f"/v1/{KIND_PATHS[kind]}/{name}"))

    def apply(self, documents: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = self._checked(
            self.http.post("/v1/apply", json=[dict(d) for d in documents])
        ).json()
        return body

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self._checked(self.http.post(path, json=dict(body))).json()
        return answer

    def list_all(self, kind: str) -> list[dict[str, Any]]:
        """Every document of ``kind`` (following pages)."""
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "1000"}
        while True:
            page = self._checked(self.http.get(f"/v1/{KIND_PATHS[kind]}", params=params)).json()
            items.extend(page["items"])
            if not page["next_page_token"]:
                return items
            params["page_token"] = page["next_page_token"]

    def history(self) -> list[dict[str, Any]]:
        """Every history entry, oldest first."""
        entries: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "1000"}
        while True:
            page = self._checked(self.http.get("/v1/history", params=params)).json()
            entries.extend(page["items"])
            if page["next_before_revision"] is None:
                return sorted(entries, key=lambda e: e["revision"])
            params["before_revision"] = str(page["next_before_revision"])

    def revision(self) -> int:
        return int(self._checked(self.http.get("/v1/revision")).json()["revision"])


def listener(name: str, port: int) -> dict[str, Any]:
    return {
        "kind": "Listener",
        "name": name,
        "spec": {"address": "127.0.0.1", "port": port, "access_log": False},
    }


def route(
    name: str,
    hostnames: Sequence[str],
    rules: Sequence[Mapping[str, Any]],
    listener: str = "public",
) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "spec": {"listeners": [listener], "hostnames": list(hostnames), "rules": list(rules)},
    }


def to(*backends: str | tuple[str, int]) -> list[dict[str, Any]]:
    """Backends: ``to("a")``, or weighted ``to(("a", 90), ("b", 10))``."""
    return [
        {"service": b} if isinstance(b, str) else {"service": b[0], "weight": b[1]}
        for b in backends
    ]


class Traffic:
    """HTTP requests through Envoy's listener (keep-alive, no redirects followed)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def close(self) -> None:
        self.http.close()

    def get(
        self, host: str, path: str = "/", headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return self.http.get(path, headers={"host": host, **(headers or {})})

    def body(self, host: str, path: str = "/", headers: Mapping[str, str] | None = None) -> str:
        """The answering upstream's name (or Envoy's error text)."""
        return str(self.get(host, path, headers).text)


def converge(what: str, probe: Callable[[], object], envoy: Envoy, timeout: float = 15.0) -> float:
    """Poll ``probe`` until it is truthy; print and return how long that took."""
    started = time.monotonic()
    wait_for(probe, timeout, what, envoy.check_alive)
    delay = time.monotonic() - started
    print(f"{what}: {delay * 1000:.0f} ms")
    return delay


@dataclass
class RestEnvoy:
    """A server (static registry, SQLite store), an Envoy on its ADS port, the REST client of
    its admin API and traffic through one Envoy listener port (``traffic.port``, on which no
    listener is configured yet)."""

    server: ServerProcess
    envoy: Envoy
    api: Api
    traffic: Traffic

    def converge(self, what: str, probe: Callable[[], object]) -> float:
        return converge(what, probe, self.envoy)


@contextmanager
def rest_envoy(registry: Path, store: Path) -> Iterator[RestEnvoy]:
    """``start_server`` on ``registry`` and ``store``, then an Envoy from ``envoy_config``; on
    exit the clients are closed, Envoy is stopped and the server killed, in that order. The
    caller starts (and stops) the upstreams and puts a listener on ``traffic.port``: a free
    port picked once the server holds its own, so it cannot be one of them."""
    server = start_server(registry, store)
    try:
        with running_envoy(envoy_config(server.ads_port)) as envoy:
            api, traffic = Api(server.admin), Traffic(free_port())
            try:
                yield RestEnvoy(server, envoy, api, traffic)
            finally:
                traffic.close()
                api.close()
    finally:
        server.kill()


_DYNAMIC = {
    "ClustersConfigDump": "dynamic_active_clusters",
    "ListenersConfigDump": "dynamic_listeners",
    "RoutesConfigDump": "dynamic_route_configs",
}


def dynamic_configs(envoy: Envoy, kind: str) -> list[dict[str, Any]]:
    """The dynamic entries of one ``/config_dump`` kind (``ClustersConfigDump``,
    ``ListenersConfigDump``, ``RoutesConfigDump``)."""
    for config in envoy.config_dump()["configs"]:
        if config["@type"].endswith("." + kind):
            return list(config.get(_DYNAMIC[kind], []))
    return []


def envoy_cluster(envoy: Envoy, name: str) -> dict[str, Any] | None:
    for entry in dynamic_configs(envoy, "ClustersConfigDump"):
        if entry["cluster"]["name"] == name:
            cluster: dict[str, Any] = entry["cluster"]
            return cluster
    return None


def envoy_resource_versions(envoy: Envoy) -> dict[str, str]:
    """``type/name -> version_info`` of every dynamic listener, cluster and route config
    Envoy holds (from ``/config_dump``)."""
    found: dict[str, str] = {}
    for entry in dynamic_configs(envoy, "ClustersConfigDump"):
        found["cluster/" + entry["cluster"]["name"]] = entry["version_info"]
    for entry in dynamic_configs(envoy, "ListenersConfigDump"):
        found["listener/" + entry["name"]] = entry["active_state"]["version_info"]
    for entry in dynamic_configs(envoy, "RoutesConfigDump"):
        found["route/" + entry["route_config"]["name"]] = entry["version_info"]
    return found


def csds(ads_port: int) -> dict[str, dict[str, tuple[str, str]]]:
    """The server's CSDS: ``node id -> {type/name: (version_info, config status)}``."""
    with grpc.insecure_channel(f"127.0.0.1:{ads_port}") as channel:
        fetch = channel.unary_unary(
            CSDS_FETCH,
            request_serializer=csds_pb2.ClientStatusRequest.SerializeToString,
            response_deserializer=csds_pb2.ClientStatusResponse.FromString,
        )
        answer = fetch(csds_pb2.ClientStatusRequest(exclude_resource_contents=True), timeout=5)
    result: dict[str, dict[str, tuple[str, str]]] = {}
    for config in answer.config:
        resources = result.setdefault(config.node.id, {})
        for entry in config.generic_xds_configs:
            kind = entry.type_url.rsplit(".", 1)[-1]
            resources[f"{kind}/{entry.name}"] = (
                entry.version_info,
                csds_pb2.ConfigStatus.Name(entry.config_status),
            )
    return result


def synced_versions(ads_port: int, node_id: str) -> dict[str, str] | None:
    """``type/name -> version`` the proxy ACKed, once every resource it holds is SYNCED."""
    resources = csds(ads_port).get(node_id)
    if not resources or any(status != "SYNCED" for _, status in resources.values()):
        return None
    return {name: version for name, (version, _) in resources.items()}
