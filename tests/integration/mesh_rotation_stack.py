"""A two-host mesh for the rotation, restart and secrets tests: ``frontend`` on host one calls
``api`` on host two through their real Envoy sidecars over mutual TLS, configured by an
``xds-server serve`` subprocess in the root namespace (static registry, SQLite or Consul KV).

- ``MeshStack``: the hosts, the applications, the sidecars and the server(s); ``start_server``
  and ``kill_server`` (``kill -9``) let a test restart the server on the same ADS port.
- ``Load``: a thread that has frontend's application call ``api`` through its sidecar every
  50 ms and keeps every answer, so a test counts the failed ones.
- ``cert_serials`` / ``trusted_serials``: what a sidecar's Envoy holds (its ``/certs``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import netns
from tests.support.envoy import Envoy, wait_for
from tests.support.mesh_apps import MeshApp
from tests.support.process import ServerProcess

#: Every application listens on this port of its own host.
APP_PORT = 8080
#: The sidecars' public mutual-TLS ports (the registry's ``sidecar_port``).
FRONTEND_INBOUND = 20000
API_INBOUND = 20001
#: frontend's application calls api on this port of its own host (its sidecar's upstream).
UPSTREAM_PORT = 9001
UPSTREAM_URL = f"http://127.0.0.1:{UPSTREAM_PORT}/ping"
TRUST_DOMAIN = "mesh.test"


def registry_yaml(frontend: netns.TestHost, api: netns.TestHost) -> str:
    return (
        "services:\n"
        "  frontend:\n"
        "    endpoints:\n"
        f"      - {{address: {frontend.address}, port: {APP_PORT},"
        f" sidecar_port: {FRONTEND_INBOUND}}}\n"
        "  api:\n"
        "    endpoints:\n"
        f"      - {{address: {api.address}, port: {APP_PORT}, sidecar_port: {API_INBOUND}}}\n"
    )


def mesh_spec(ttl: str = "24h", **ca: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "trust_domain": TRUST_DOMAIN,
        "mtls": "strict",
        "default_action": "deny",
        "certificate_ttl": ttl,
    }
    if ca:
        spec["ca"] = ca
    return spec


def sidecar_spec(inbound: int, upstreams: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "inbound": {
            "port": inbound,
            "local_address": "127.0.0.1",
            "local_port": APP_PORT,
            "protocol": "http",
        },
        "upstreams": upstreams or [],
    }


FRONTEND_SIDECAR = sidecar_spec(
    FRONTEND_INBOUND, [{"service": "api", "local_port": UPSTREAM_PORT, "protocol": "http"}]
)
API_SIDECAR = sidecar_spec(API_INBOUND)
ALLOW = {"source": "frontend", "destination": "api", "action": "allow"}


def put(admin: str, path: str, spec: dict[str, Any], **params: str) -> httpx.Response:
    """``PUT /v1/<path>`` with ``{"spec": spec}``; fails the test unless 200/201."""
    answer = httpx.put(f"{admin}/v1/{path}", json={"spec": spec}, params=params, timeout=10)
    assert answer.status_code in (200, 201), (path, answer.status_code, answer.text)
    return answer


def mesh_status(admin: str) -> dict[str, Any]:
    answer = httpx.get(f"{admin}/v1/mesh", timeout=10)
    assert answer.status_code == 200, answer.text
    status: dict[str, Any] = answer.json()["status"]
    return status


def configure(admin: str, ttl: str = "24h") -> None:
    """The mesh, both sidecars and the intention that lets frontend call api."""
    put(admin, "mesh", mesh_spec(ttl))
    put(admin, "sidecars/frontend", FRONTEND_SIDECAR)
    put(admin, "sidecars/api", API_SIDECAR)
    put(admin, "intentions/frontend-to-api", ALLOW)


# -- what a sidecar's Envoy holds -----------------------------------------------------------------


def _certs(envoy: Envoy) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(envoy.get("/certs")).get("certificates", [])
    return found


def cert_serials(envoy: Envoy) -> set[str]:
    """The serial numbers of the certificates the Envoy presents (its identity)."""
    return {
        str(cert["serial_number"]).lower()
        for context in _certs(envoy)
        for cert in context.get("cert_chain") or []
    }


def trusted_serials(envoy: Envoy) -> set[str]:
    """The serial numbers of the CA certificates the Envoy validates peers with."""
    return {
        str(cert["serial_number"]).lower()
        for context in _certs(envoy)
        for cert in context.get("ca_cert") or []
    }


def listener_modified(envoy: Envoy) -> int:
    return envoy.stat("listener_manager.listener_modified")


# -- a provided CA ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProvidedCa:
    certificate: str  # PEM
    private_key: str  # PEM (PKCS#8)
    serial: str  # hex, as Envoy's /certs shows it

    def document_spec(self) -> dict[str, Any]:
        return {"certificate": self.certificate, "private_key": self.private_key}


def make_ca(common_name: str = "Test Mesh Provided CA") -> ProvidedCa:
    """An ECDSA P-256 CA (CA:TRUE, keyCertSign), valid for a day, made with cryptography."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    serial = format(cert.serial_number, "x")
    return ProvidedCa(
        certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        serial=serial if len(serial) % 2 == 0 else "0" + serial,
    )


# -- requests every 50 ms -------------------------------------------------------------------------


@dataclass
class Load:
    """frontend's application calls ``UPSTREAM_URL`` every ``period`` seconds (a thread)."""

    app: MeshApp
    period: float = 0.05
    answers: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _one(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            answer = self.app.call_http(UPSTREAM_URL, timeout=3)
        except RuntimeError as error:  # frontend's application itself did not answer
            answer = {"status": 0, "error": str(error)}
        answer["at"] = started
        return answer

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            self.answers.append(self._one())
            due += self.period
            # Pacing, not synchronisation: the next request is due 50 ms after the last one.
            self._stop.wait(max(due - time.monotonic(), 0))

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="mesh-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    @property
    def sent(self) -> int:
        return len(self.answers)

    def failures(self) -> list[dict[str, Any]]:
        return [a for a in list(self.answers) if a.get("status") != 200 or not _from_api(a)]

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _from_api(answer: dict[str, Any]) -> bool:
    try:
        return bool(json.loads(answer["body"])["instance"] == "api")
    except (KeyError, ValueError, TypeError):
        return False


def call_api(app: MeshApp) -> dict[str, Any]:
    return app.call_http(UPSTREAM_URL, timeout=3)


def api_answers(app: MeshApp) -> bool:
    answer = call_api(app)
    return answer["status"] == 200 and _from_api(answer)


# -- the stack ------------------------------------------------------------------------------------


@dataclass
class MeshStack:
    """``frontend`` (host one) → ``api`` (host two), each with its sidecar; see the module."""

    hosts: list[netns.TestHost]
    tmp: Path
    frontend: MeshApp
    api: MeshApp
    servers: list[ServerProcess] = field(default_factory=list)
    sidecars: dict[str, Envoy] = field(default_factory=dict)

    @property
    def server(self) -> ServerProcess:
        return self.servers[0]

    @property
    def root_address(self) -> str:
        return self.hosts[0].root_address

    def serve(
        self,
        store: str,
        *,
        ads_port: int = 0,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        """Start a server (ADS on the root address, reachable from the hosts)."""
        registry = self.tmp / "registry.yaml"
        if not registry.exists():
            registry.write_text(registry_yaml(*self.hosts))
        server = ServerProcess(
            "--ads-listen",
            f"{self.root_address}:{ads_port}",
            "--admin-listen",
            "127.0.0.1:0",
            "--registry",
            f"static:{registry}",
            "--store",
            store,
            "--log-format",
            "text",
            *extra,
            env=env,
        )
        self.servers.append(server)
        return server.start()

    def start_sidecar(self, service: str, ads_port: int) -> Envoy:
        host = self.hosts[0] if service == "frontend" else self.hosts[1]
        envoy = host.sidecar(service, f"{service}-1", ads_port).start()
        self.sidecars[service] = envoy
        return envoy

    def wait_for_calls(self, timeout: float = 60) -> None:
        """Until frontend's application reaches api through both sidecars."""
        checks = [envoy.check_alive for envoy in self.sidecars.values()]

        def alive() -> None:
            for check in checks:
                check()

        wait_for(lambda: api_answers(self.frontend), timeout, "frontend -> api", alive)

    def wait_for_identities(
        self, servers: dict[str, ServerProcess] | None = None, timeout: float = 30
    ) -> None:
        """Until each sidecar presents the identity its server (by service; default: the
        first server) issued it."""

        def held() -> bool:
            for service, envoy in self.sidecars.items():
                server = (servers or {}).get(service, self.server)
                issued = {
                    i["service"]: i["serial"] for i in mesh_status(server.admin)["identities"]
                }
                if cert_serials(envoy) != {issued.get(service, "").lower()}:
                    return False
            return True

        wait_for(held, timeout, "the issued identities in the sidecars")

    def logs(self) -> str:
        return "".join(server.rest_of_output() for server in self.servers)


@contextlib.contextmanager
def mesh_stack(tmp: Path) -> Iterator[MeshStack]:
    """Two hosts with their applications; servers and sidecars are the test's to start. Every
    process and namespace is gone on exit, whatever happened."""
    with (
        netns.hosts(2) as hosts,
        MeshApp.http("frontend", hosts[0], port=APP_PORT) as frontend,
        MeshApp.http("api", hosts[1], address="127.0.0.1", port=APP_PORT) as api,
    ):
        stack = MeshStack(hosts, tmp, frontend, api)
        try:
            yield stack
        finally:
            for envoy in stack.sidecars.values():
                envoy.stop()
            for server in stack.servers:
                server.kill()
    # Nothing left behind: no namespace of ours, no process (a failure above skips this).
    assert not {host.name for host in hosts} & set(netns.namespaces())
    processes = [s.process for s in stack.servers] + [e.process for e in stack.sidecars.values()]
    processes += [frontend.process, api.process]
    assert all(p is not None and p.poll() is not None for p in processes)


def free_root_port(address: str) -> int:
    """A port free on ``address`` (the root side of the test network) for a fixed ADS port."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


def connected_nodes(admin: str) -> set[str]:
    """The node ids of the proxies connected to the server at ``admin`` now."""
    answer = httpx.get(f"{admin}/v1/proxies", params={"connected": "true"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return {str(item["node_id"]) for item in answer.json()["items"]}


def connected_replicas(admin: str) -> dict[str, str | None]:
    """node id -> the replica it is connected to (None: the list does not say), as the
    server at ``admin`` lists them (with --store consul-kv, the whole fleet's)."""
    answer = httpx.get(f"{admin}/v1/proxies", params={"connected": "true"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return {str(item["node_id"]): item.get("replica") for item in answer.json()["items"]}


def rejected_updates(envoy: Envoy) -> dict[str, int]:
    """Every ``*.update_rejected`` counter of the Envoy that is not 0 (a NACKed xDS update)."""
    found: dict[str, int] = {}
    for line in envoy.get("/stats?filter=update_rejected").splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit() and int(value) != 0:
            found[name] = int(value)
    return found
