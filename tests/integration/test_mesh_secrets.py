"""Issue 15, acceptance 6: no private key — the mesh CA's or a workload's — leaves the server
anywhere but over SDS to the proxy it belongs to, real Envoys.

With frontend calling api through their sidecars (the server logging at debug level), the
test takes the actual keys — the built-in CA's from ``store export --include-secrets`` (which
must hold it, and say so), each leaf's from SDS as a proxy of that group gets it — and scans
every other way out for ``PRIVATE KEY`` and for every line of each key's base64 body (and,
in the binary CSDS answer, for each key's DER bytes): the REST reads (``/v1/mesh``,
``/v1/sidecars``, ``/v1/intentions``, ``/v1/proxies``, ``/v1/proxies/{id}``,
``/v1/proxies/{id}/config``, ``/metrics``), every history entry, dry runs, ``store export``
without the flag, the events (``/v1/events``, read until the issuance events and a bounded
time more), the CSDS dump on the ADS port and the server's whole log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.status.v3 import csds_pb2
from google.protobuf import json_format

import xds_server.translate.translation  # noqa: F401  (every type CSDS sends, to show it as JSON)
from tests.integration.mesh_rotation_stack import (
    MeshStack,
    configure,
    mesh_spec,
    mesh_stack,
    mesh_status,
)
from tests.support.sse import open_events
from tests.support.xds_client import SotwClient, node
from xds_server.cache.types import SECRET

pytestmark = pytest.mark.envoy

KEY_MARK = "PRIVATE KEY"
_PEM = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----(.*?)-----END \1PRIVATE KEY-----", re.S)
CSDS = "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus"
SERVICES = ("frontend", "api")


class Key:
    """One private key (PEM): its base64 lines and DER bytes, to look for."""

    def __init__(self, what: str, pem: str) -> None:
        found = _PEM.search(pem)
        assert found is not None, f"{what}: no PEM private key in {pem[:40]!r}"
        self.what = what
        self.lines = [line.strip() for line in found.group(2).split() if line.strip()]
        self.der = base64.b64decode("".join(self.lines))

    def in_text(self, text: str) -> bool:
        flat = text.replace("\\n", "\n").replace("\\/", "/")
        return any(line in flat for line in self.lines)

    def in_bytes(self, data: bytes) -> bool:
        return self.der in data or self.in_text(data.decode("latin-1"))


def export(store: Path, *flags: str) -> tuple[str, str]:
    command = [sys.executable, "-m", "xds_server", "store", "export", "-"]
    done = subprocess.run(
        [*command, "--store", f"sqlite:{store}", *flags],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout, done.stderr


async def _leaf_key(address: str, port: int, service: str) -> str:
    """The key SDS sends a proxy of ``service``'s group (as its sidecar gets it)."""
    async with grpc.aio.insecure_channel(f"{address}:{port}") as channel:
        client = SotwClient(channel)
        name = f"mesh/identity/{service}"
        await client.request(SECRET, [name], node_=node(f"{service}-key-probe", service))
        response = await client.recv(10)
        client.cancel()
    for resource in response.resources:
        secret = secret_pb2.Secret()
        resource.Unpack(secret)
        if secret.name == name:
            key = secret.tls_certificate.private_key
            text: str = key.inline_bytes.decode() if key.inline_bytes else key.inline_string
            return text
    raise AssertionError(f"SDS sent no {name}: {[r.type_url for r in response.resources]}")


async def _csds(address: str, port: int) -> bytes:
    async with grpc.aio.insecure_channel(f"{address}:{port}") as channel:
        call = channel.unary_unary(
            CSDS,
            request_serializer=csds_pb2.ClientStatusRequest.SerializeToString,
            response_deserializer=csds_pb2.ClientStatusResponse.FromString,
        )
        answer = await call(csds_pb2.ClientStatusRequest(), timeout=10)
    data: bytes = answer.SerializeToString()
    return data


def _get(admin: str, path: str, **params: Any) -> str:
    answer = httpx.get(f"{admin}{path}", params=params, timeout=10)
    assert answer.status_code == 200, (path, answer.status_code, answer.text)
    return answer.text


def _dry_run(admin: str, path: str, spec: dict[str, Any]) -> str:
    answer = httpx.put(
        f"{admin}/v1/{path}", json={"spec": spec}, params={"dry_run": "true"}, timeout=10
    )
    assert answer.status_code in (200, 201), (path, answer.status_code, answer.text)
    return answer.text


def _events(admin: str) -> str:
    """Every event since the start, read until each service's issuance is among them and then
    two seconds more (a bounded read: the stream never ends by itself)."""
    issued: set[str] = set()
    with open_events(admin, since=0) as stream:
        stream.subscribed()

        def both_issued(frame: Any) -> bool:
            if frame.event == "mesh_identity_issued":
                text = json.dumps(frame.data)
                issued.update(s for s in SERVICES if f"/service/{s}" in text)
            return issued >= set(SERVICES)

        stream.until(both_issued, timeout=20)
        with contextlib.suppress(TimeoutError):  # the bounded read ended
            stream.until(lambda frame: False, timeout=2)
        frames = stream.frames
    return "\n".join(f"{frame.event}\n{json.dumps(frame.data)}" for frame in frames)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[MeshStack]:
    with mesh_stack(tmp_path) as started:
        yield started


def test_no_private_key_leaves_the_server_but_over_sds(stack: MeshStack, tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    server = stack.serve(f"sqlite:{store}", extra=("--log-level", "debug", "--log-format", "json"))
    admin = server.admin
    configure(admin)
    for service in SERVICES:
        stack.start_sidecar(service, server.ads_port)
    stack.wait_for_calls()
    stack.wait_for_identities()

    # The keys themselves: the CA's from the export that is asked for them ...
    with_secrets, notice = export(store, "--include-secrets")
    assert KEY_MARK in with_secrets and "secret" in notice and "private key" in notice.lower()
    secrets = json.loads(with_secrets)["secrets"]
    root = json.loads(secrets["mesh/ca/builtin"])
    ca_key = Key("the built-in CA key", root["private_key"])
    issuing = x509.load_pem_x509_certificate(root["certificate"].encode())
    ca = mesh_status(admin)["ca"]  # the CA that issues now is the one the export holds
    assert ca["provider"] == "builtin"
    assert ca["fingerprint_sha256"] == issuing.fingerprint(hashes.SHA256()).hex(":").upper()
    # ... each leaf's as its proxy gets it over SDS.
    keys = [ca_key] + [
        Key(f"{s}'s leaf key", asyncio.run(_leaf_key(stack.root_address, server.ads_port, s)))
        for s in SERVICES
    ]
    assert len({key.der for key in keys}) == 3

    proxies = json.loads(_get(admin, "/v1/proxies"))["items"]
    node_ids = sorted(item["node_id"] for item in proxies)
    assert {"frontend-1", "api-1"} <= set(node_ids)
    seen: dict[str, str] = {
        "GET /v1/mesh": _get(admin, "/v1/mesh"),
        "GET /v1/sidecars": _get(admin, "/v1/sidecars"),
        "GET /v1/intentions": _get(admin, "/v1/intentions"),
        "GET /v1/proxies": _get(admin, "/v1/proxies"),
        "GET /metrics": _get(admin, "/metrics"),
    }
    for service in SERVICES:
        seen[f"GET /v1/sidecars/{service}"] = _get(admin, f"/v1/sidecars/{service}")
    for node_id in node_ids:
        seen[f"GET /v1/proxies/{node_id}"] = _get(admin, f"/v1/proxies/{node_id}")
        seen[f"GET /v1/proxies/{node_id}/config"] = _get(admin, f"/v1/proxies/{node_id}/config")
    seen["PUT /v1/mesh?dry_run=true"] = _dry_run(admin, "mesh", mesh_spec("12h"))
    seen["PUT /v1/sidecars/api?dry_run=true"] = _dry_run(
        admin, "sidecars/api", {"inbound": {"port": 20002, "local_port": 8080}}
    )
    history = json.loads(_get(admin, "/v1/history", limit=1000))
    seen["GET /v1/history"] = json.dumps(history)
    for entry in history["items"]:
        revision = entry["revision"]
        seen[f"GET /v1/history/{revision}"] = _get(admin, f"/v1/history/{revision}")
    without_secrets, _ = export(store)
    assert "secrets" not in json.loads(without_secrets)  # left out unless asked for
    seen["store export"] = without_secrets
    seen["store export --history"] = export(store, "--history")[0]
    seen["GET /v1/events"] = _events(admin)
    csds = asyncio.run(_csds(stack.root_address, server.ads_port))
    csds_message = csds_pb2.ClientStatusResponse.FromString(csds)
    assert {c.node.id for c in csds_message.config} >= {"frontend-1", "api-1"}
    seen["CSDS (JSON)"] = json_format.MessageToJson(csds_message)
    seen["server log"] = stack.logs()  # stops the server: last
    assert "mesh: issued" in seen["server log"]  # debug lines about issuance were logged

    # What the scan would catch: the SDS answer and the export asked for the key hold them.
    assert ca_key.in_text(with_secrets)
    leaks = [
        f"{where}: {'PRIVATE KEY' if KEY_MARK in text else key.what}"
        for where, text in seen.items()
        for key in keys
        if KEY_MARK in text or key.in_text(text)
    ]
    leaks += [f"CSDS (binary): {key.what}" for key in keys if key.in_bytes(csds)]
    if KEY_MARK.encode() in csds:
        leaks.append("CSDS (binary): PRIVATE KEY")
    assert leaks == []
    print(f"scanned {len(seen) + 1} outputs ({sum(map(len, seen.values()))} characters)")
