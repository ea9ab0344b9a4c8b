"""``/v1/proxies``: status per proxy and type, what each holds (secrets redacted), and the
same facts as CSDS. Clients are the test's own xDS streams against the in-process server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.status.v3 import csds_pb2

from tests.conftest import XdsHarness
from tests.support import resources as r
from tests.support.xds_client import DeltaClient, SotwClient, node
from tests.unit.admin_harness import assert_problem
from xds_server.admin.app import create_admin_app
from xds_server.admin.context import AdminContext
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, SECRET
from xds_server.model import Inventory
from xds_server.store import MemoryStore

KEY = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAAS\n-----END PRIVATE KEY-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
FETCH = "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus"


def tls_secret(name: str) -> Any:
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=CERT),
            private_key=base_pb2.DataSource(inline_bytes=KEY),
            password=base_pb2.DataSource(inline_string="hunter2"),
        ),
    )


def snapshot_with_secrets() -> Snapshot:
    return Snapshot.build(
        [
            r.cluster("web"),
            r.endpoints("web", 8081),
            r.listener("http", 10000, "http"),
            r.route_config("http", "web"),
            tls_secret("certificate/web"),
            r.secret("token", "not-a-real-secret"),
        ]
    )


@pytest.fixture
async def api(xds: XdsHarness) -> AsyncIterator[httpx.AsyncClient]:
    store = MemoryStore()
    await store.open()
    app = create_admin_app(
        AdminContext(store=store, inventory=Inventory, proxies=xds.registry, cache=xds.cache)
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://admin"
    ) as client:
        yield client
    await store.close()


async def get(api: httpx.AsyncClient, path: str) -> Any:
    answer = await api.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def fetch_csds(xds: XdsHarness) -> Any:
    call = xds.channel.unary_unary(
        FETCH,
        request_serializer=csds_pb2.ClientStatusRequest.SerializeToString,
        response_deserializer=csds_pb2.ClientStatusResponse.FromString,
    )
    return await call(csds_pb2.ClientStatusRequest())


async def synced_client(xds: XdsHarness, node_id: str, group: str = "edge") -> SotwClient:
    client = SotwClient(xds.channel)
    await client.request(CLUSTER, node_=node(node_id, group))
    await client.ack(await client.recv())
    await client.request(LISTENER)  # a sentinel: once answered, the ACK above was read
    await client.ack(await client.recv())
    await client.request(ENDPOINT, ["web"])
    await client.recv()  # sent, not ACKed: STALE
    return client


async def test_a_proxy_with_its_status_per_type(xds: XdsHarness, api: httpx.AsyncClient) -> None:
    xds.cache.set_snapshots(r.snapshot())
    client = await synced_client(xds, "edge-1")
    items = (await get(api, "/v1/proxies"))["items"]
    assert [p["node_id"] for p in items] == ["edge-1"]
    proxy = items[0]
    assert proxy == await get(api, "/v1/proxies/edge-1")
    assert proxy["group"] == "edge" and proxy["stream_kind"] == "ads-sotw"
    assert proxy["connected"] is True and proxy["disconnected_at"] is None
    assert proxy["peer"].startswith("ipv4:127.0.0.1:") and proxy["streams"] == 1
    assert list(proxy["types"]) == ["CDS", "EDS", "LDS"]  # push order
    cds = proxy["types"]["CDS"]
    snapshot = xds.cache.snapshot_for("edge")
    assert cds["status"] == "SYNCED"
    assert cds["sent_version"] == cds["acked_version"] == snapshot.version(CLUSTER)
    assert cds["resources"] == 1 and cds["responses"] == 1 and cds["bytes_sent"] > 0
    assert cds["last_nack"] is None and cds["sent_at"].endswith("Z")
    assert proxy["types"]["EDS"]["status"] == "STALE"
    assert proxy["types"]["EDS"]["acked_version"] == ""
    assert proxy["status"] == "STALE"  # the worst of its types
    client.cancel()


async def test_a_nack_with_envoys_message_and_the_same_as_csds(
    xds: XdsHarness, api: httpx.AsyncClient
) -> None:
    xds.cache.set_snapshots(r.snapshot())
    good = await synced_client(xds, "good-1")
    bad = SotwClient(xds.channel)
    await bad.request(CLUSTER, node_=node("bad-1", "edge"))
    await bad.nack(await bad.recv(), "cluster 'web': connect_timeout must be > 0")
    await bad.request(LISTENER)
    await bad.recv()
    proxies = {p["node_id"]: p for p in (await get(api, "/v1/proxies"))["items"]}
    rejected = proxies["bad-1"]["types"]["CDS"]
    assert rejected["status"] == "NACKED" and proxies["bad-1"]["status"] == "NACKED"
    assert rejected["last_nack"]["message"] == "cluster 'web': connect_timeout must be > 0"
    assert rejected["last_nack"]["version"] == rejected["sent_version"]  # what was rejected
    assert rejected["acked_version"] == ""  # Envoy had nothing before
    nacked = (await get(api, "/v1/proxies?status=NACKED"))["items"]
    assert [p["node_id"] for p in nacked] == ["bad-1"]

    csds = {c.node.id: c for c in (await fetch_csds(xds)).config}
    assert set(csds) == set(proxies)
    statuses = {
        csds_pb2.SYNCED: "SYNCED",
        csds_pb2.STALE: "STALE",
        csds_pb2.ERROR: "NACKED",
        csds_pb2.NOT_SENT: "NOT_SENT",
    }
    for node_id, config in csds.items():
        for entry in config.generic_xds_configs:
            mine = proxies[node_id]["types"][
                {CLUSTER: "CDS", LISTENER: "LDS", ENDPOINT: "EDS"}[entry.type_url]
            ]
            assert statuses[entry.config_status] == mine["status"]
            assert (
                entry.version_info
                == xds.cache.snapshot_for("edge").of_type(entry.type_url)[entry.name].version
            )
    good.cancel()
    bad.cancel()


async def test_what_a_proxy_holds_with_secrets_redacted(
    xds: XdsHarness, api: httpx.AsyncClient
) -> None:
    xds.cache.set_snapshots(snapshot_with_secrets())
    client = SotwClient(xds.channel)
    await client.request(CLUSTER, node_=node("edge-1", "edge"))
    await client.ack(await client.recv())
    await client.request(SECRET, ["certificate/web", "token"])
    await client.ack(await client.recv(), ["certificate/web", "token"])
    await client.request(LISTENER)
    await client.recv()
    answer = await api.get("/v1/proxies/edge-1/config")
    assert answer.status_code == 200
    config = answer.json()
    assert config["node_id"] == "edge-1" and config["group"] == "edge"
    assert list(config["types"]) == ["CDS", "LDS", "SDS"]
    (cluster,) = config["types"]["CDS"]["resources"]
    assert cluster["name"] == "web"
    assert cluster["resource"]["@type"] == CLUSTER
    assert cluster["resource"]["connect_timeout"] == "1s"  # proto field names, as Envoy dumps
    secrets = {s["name"]: s["resource"] for s in config["types"]["SDS"]["resources"]}
    assert set(secrets) == {"certificate/web", "token"}
    certificate = secrets["certificate/web"]["tls_certificate"]
    assert certificate["certificate_chain"] == {"inline_string": CERT}  # public: kept
    assert certificate["private_key"] == {"inline_string": "[redacted]"}  # as Envoy dumps
    assert certificate["password"] == {"inline_string": "[redacted]"}
    assert secrets["token"]["generic_secret"] == {"secret": {"inline_string": "[redacted]"}}
    for secret_text in ("MIIEvQIBADANBgkqhkiG9w0BAQEFAAS", "hunter2", "not-a-real-secret"):
        assert secret_text not in answer.text
    # A new snapshot: once it is pushed, the config shows what was pushed.
    xds.cache.set_snapshots(r.snapshot(listener_port=10001))
    pushed = await client.recv()
    assert pushed.type_url == LISTENER
    config = await get(api, "/v1/proxies/edge-1/config")
    current = xds.cache.snapshot_for("edge")
    for entry in config["types"].values():  # the secrets are gone from the new snapshot
        for held in entry["resources"]:
            now = current.of_type(entry["type_url"]).get(held["name"])
            assert (held["resource"] is None) == (now is None or now.version != held["version"])
    (listener,) = config["types"]["LDS"]["resources"]
    assert listener["resource"]["address"]["socket_address"]["port_value"] == 10001
    assert config["types"]["LDS"]["version"] == pushed.version_info
    client.cancel()


async def test_disconnected_proxies_stay_listed_a_while(
    xds: XdsHarness, api: httpx.AsyncClient
) -> None:
    xds.cache.set_snapshots(r.snapshot())
    gone = await synced_client(xds, "gone-1", "mesh")
    stays = DeltaClient(xds.channel)
    await stays.request(CLUSTER, node_=node("stays-1", "edge"))
    await stays.ack(await stays.recv())
    gone_event = asyncio.Event()
    xds.registry.observe(
        lambda event: (
            gone_event.set() if event.kind == "disconnect" and event.node_id == "gone-1" else None
        )
    )
    gone.cancel()
    await asyncio.wait_for(gone_event.wait(), 10)
    found = await get(api, "/v1/proxies/gone-1")
    assert found["connected"] is False
    assert found["disconnected_at"] is not None and found["streams"] == 0
    everyone = [p["node_id"] for p in (await get(api, "/v1/proxies"))["items"]]
    assert everyone == ["gone-1", "stays-1"]
    connected = (await get(api, "/v1/proxies?connected=true"))["items"]
    assert [(p["node_id"], p["stream_kind"]) for p in connected] == [("stays-1", "ads-delta")]
    offline = (await get(api, "/v1/proxies?connected=false"))["items"]
    assert [p["node_id"] for p in offline] == ["gone-1"]
    by_group = (await get(api, "/v1/proxies?group=mesh"))["items"]
    assert [p["node_id"] for p in by_group] == ["gone-1"]
    stays.cancel()


async def test_unknown_proxies_are_404_problems(api: httpx.AsyncClient) -> None:
    for path in ("/v1/proxies/nobody", "/v1/proxies/nobody/config"):
        problem = assert_problem(await api.get(path), 404)
        assert "nobody" in problem["detail"]
    assert (await get(api, "/v1/proxies")) == {"items": []}


def listener_with_inline_tls() -> Any:
    """A listener whose TLS context is inline (not SDS): a key inside an ``Any``, and a
    private key provider whose configuration could hold key material."""
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
    from google.protobuf import any_pb2, struct_pb2

    provider_config = any_pb2.Any()
    provider_config.Pack(struct_pb2.Struct(fields={"pin": struct_pb2.Value(string_value="4321")}))
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificates=[
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(inline_string=CERT),
                    private_key=base_pb2.DataSource(inline_bytes=KEY),
                ),
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(inline_string=CERT),
                    private_key_provider=common_pb2.PrivateKeyProvider(
                        provider_name="hsm", typed_config=provider_config
                    ),
                ),
            ]
        )
    )
    packed = any_pb2.Any()
    packed.Pack(context)
    listener = r.listener("https", 10443, "http")
    listener.filter_chains[0].transport_socket.name = "envoy.transport_sockets.tls"
    listener.filter_chains[0].transport_socket.typed_config.CopyFrom(packed)
    return listener


async def test_csds_and_the_rest_api_redact_alike(xds: XdsHarness, api: httpx.AsyncClient) -> None:
    from google.protobuf import json_format

    xds.cache.set_snapshots(
        Snapshot.build(
            [
                r.cluster("web"),
                r.endpoints("web", 8081),
                r.route_config("http", "web"),
                listener_with_inline_tls(),
            ]
        )
    )
    client = SotwClient(xds.channel)
    await client.request(LISTENER, node_=node("edge-1", "edge"))
    await client.ack(await client.recv())
    await client.request(CLUSTER)  # sentinel: the ACK above was read first
    await client.recv()
    answer = await api.get("/v1/proxies/edge-1/config")
    (held,) = answer.json()["types"]["LDS"]["resources"]
    (config,) = (await fetch_csds(xds)).config
    (entry,) = [e for e in config.generic_xds_configs if e.type_url == LISTENER]
    from_csds = json_format.MessageToDict(entry.xds_config, preserving_proto_field_name=True)
    assert from_csds == held["resource"]  # one redaction: the same view on both
    socket = held["resource"]["filter_chains"][0]["transport_socket"]["typed_config"]
    with_key, with_provider = socket["common_tls_context"]["tls_certificates"]
    assert with_key["private_key"] == {"inline_string": "[redacted]"}
    assert with_key["certificate_chain"] == {"inline_string": CERT}  # public: kept
    assert with_provider["private_key_provider"] == {"provider_name": "hsm", "typed_config": {}}
    csds_bytes = entry.xds_config.value
    for secret in ("MIIEvQIBADANBgkqhkiG9w0BAQEFAAS", "4321"):
        assert secret not in answer.text
        assert secret.encode() not in csds_bytes


async def test_a_sidecar_shows_the_identity_it_holds(
    xds: XdsHarness, api: httpx.AsyncClient
) -> None:
    from datetime import UTC, datetime, timedelta

    from xds_server.mesh import generate_root, issue_leaf

    now = datetime.now(UTC)
    leaf = issue_leaf(
        generate_root("mesh.test", now), "mesh.test", "api", now, timedelta(minutes=10)
    )
    identity = secret_pb2.Secret(
        name="mesh/identity/api",
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=leaf.certificate_chain),
            private_key=base_pb2.DataSource(inline_string=leaf.private_key),
        ),
    )
    xds.cache.set_snapshots(
        Snapshot.build([r.cluster("web"), r.endpoints("web", 8081), identity, r.secret("token")])
    )
    client = SotwClient(xds.channel)
    await client.request(SECRET, ["mesh/identity/api", "token"], node_=node("api-1", "api"))
    await client.ack(await client.recv(), ["mesh/identity/api", "token"])
    await client.request(CLUSTER)  # sentinel: the ACK above was read first
    await client.recv()
    answer = await api.get("/v1/proxies/api-1")
    (held,) = answer.json()["identities"]
    assert held["service"] == "api"
    assert held["spiffe_id"] == "spiffe://mesh.test/service/api"
    assert held["serial"].replace(":", "").lower().lstrip("0") == leaf.serial.lstrip("0")
    assert held["not_after"].startswith(leaf.not_after.strftime("%Y-%m-%dT%H:%M"))
    assert "PRIVATE KEY" not in answer.text
    listed = (await api.get("/v1/proxies")).json()["items"]
    assert [p["node_id"] for p in listed] == ["api-1"]
