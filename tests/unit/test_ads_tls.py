"""TLS on the ADS port: client certificates required, each node bound to its certificate's
names, CSDS limited to what the caller's certificate names, certificates rotated without a
restart. In process, with a grpc.aio client and certificates from trustme."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.status.v3 import csds_pb2

from tests.support import resources as r
from tests.support.xds_client import SotwClient, node
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import CLUSTER
from xds_server.cli.serve import parse_serve
from xds_server.server.grpc_server import start_ads_server
from xds_server.server.tls import AdsTls, node_allowed
from xds_server.settings import SettingsError
from xds_server.status import ProxyRegistry

SERVER_NAME = "xds-server.test"
FETCH_CLUSTERS = "/envoy.service.cluster.v3.ClusterDiscoveryService/FetchClusters"
CSDS_FETCH = "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus"


@dataclass
class Pki:
    ca: trustme.CA
    dir: Path

    def write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def server_files(self, ca: trustme.CA | None = None) -> tuple[str, str]:
        cert = (ca or self.ca).issue_cert(SERVER_NAME, "127.0.0.1")
        return (
            self.write("server.crt", cert.private_key_and_cert_chain_pem.bytes()),
            self.write("server.key", cert.private_key_pem.bytes()),
        )

    def client(self, *names: str, ca: trustme.CA | None = None) -> tuple[bytes, bytes]:
        cert = (ca or self.ca).issue_cert(*names)
        return cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(trustme.CA(), tmp_path)


@dataclass
class Ads:
    cache: SnapshotCache
    registry: ProxyRegistry
    port: int
    pki: Pki
    channels: list[grpc.aio.Channel]

    def channel(
        self, key_cert: tuple[bytes, bytes] | None, *, trust: trustme.CA | None = None
    ) -> grpc.aio.Channel:
        key, cert = key_cert if key_cert is not None else (None, None)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(trust or self.pki.ca).cert_pem.bytes(),
            private_key=key,
            certificate_chain=cert,
        )
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{self.port}",
            credentials,
            options=[("grpc.ssl_target_name_override", SERVER_NAME)],
        )
        self.channels.append(channel)
        return channel


@pytest.fixture
async def ads_factory(pki: Pki) -> AsyncIterator[Callable[..., Any]]:
    servers: list[grpc.aio.Server] = []
    made: list[Ads] = []

    async def make(verify_node: str | None = "group", client_ca: bool = True) -> Ads:
        cert, key = pki.server_files()
        ca = pki.write("clients-ca.crt", pki.ca.cert_pem.bytes()) if client_ca else None
        tls = AdsTls(cert, key, ca, verify_node)
        tls.check()
        cache, registry = SnapshotCache(), ProxyRegistry()
        cache.set_snapshots(r.snapshot())
        server, port = await start_ads_server(cache, registry, "127.0.0.1", 0, tls=tls)
        servers.append(server)
        ads = Ads(cache, registry, port, pki, [])
        made.append(ads)
        return ads

    yield make
    for ads in made:
        for channel in ads.channels:
            await channel.close()
    for server in servers:
        await server.stop(None)


async def first_response(channel: grpc.aio.Channel, node_: Any) -> Any:
    client = SotwClient(channel)
    await client.request(CLUSTER, node_=node_)
    try:
        return await client.recv(timeout=10)
    finally:
        client.cancel()


async def refusal(channel: grpc.aio.Channel, node_: Any) -> tuple[grpc.StatusCode, str]:
    client = SotwClient(channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:  # on the write or on the read
        await client.request(CLUSTER, node_=node_)
        await client.recv(timeout=10)
    return error.value.code(), str(error.value.details())


async def test_a_node_whose_group_its_certificate_names_is_served(ads_factory: Any) -> None:
    ads = await ads_factory()
    channel = ads.channel(ads.pki.client("default"))
    response = await first_response(channel, node("envoy-1", "default"))
    assert response.type_url == CLUSTER
    assert len(response.resources) == 1


async def test_a_node_claiming_another_group_is_refused(ads_factory: Any) -> None:
    ads = await ads_factory()
    channel = ads.channel(ads.pki.client("edge", "envoy-1"))
    code, details = await refusal(channel, node("envoy-1", "default"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "group 'default'" in details and "edge" in details
    assert ads.registry.proxies(include_disconnected=True) == []  # never registered
    # The same channel is fine for the group the certificate names.
    assert (await first_response(channel, node("envoy-1", "edge"))).type_url == CLUSTER


async def test_the_delta_stream_and_fetch_are_checked_too(ads_factory: Any) -> None:
    ads = await ads_factory()
    channel = ads.channel(ads.pki.client("edge"))
    delta = channel.stream_stream(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
        request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
    )()
    await delta.write(
        discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, node=node("n", "default"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await delta.read()
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    fetch = channel.unary_unary(
        FETCH_CLUSTERS,
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await fetch(discovery_pb2.DiscoveryRequest(node=node("n", "default")))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    allowed = await fetch(discovery_pb2.DiscoveryRequest(node=node("n", "edge")))
    assert allowed.type_url == CLUSTER


@pytest.mark.parametrize(
    ("mode", "names", "node_id", "group", "allowed"),
    [
        ("group", {"default"}, "a", "default", True),
        ("group", {"a"}, "a", "default", False),
        ("id", {"a"}, "a", "default", True),
        ("id", {"default"}, "a", "default", False),
        ("id+group", {"a", "default"}, "a", "default", True),
        ("id+group", {"a"}, "a", "default", False),
        ("id+group", {"default"}, "a", "default", False),
    ],
)
def test_the_identity_rules(
    mode: str, names: set[str], node_id: str, group: str, allowed: bool
) -> None:
    assert node_allowed(mode, node_id, group, frozenset(names)) is allowed


async def test_id_and_group_mode_against_real_certificates(ads_factory: Any) -> None:
    ads = await ads_factory(verify_node="id+group")
    both = ads.channel(ads.pki.client("envoy-1", "default"))
    assert (await first_response(both, node("envoy-1", "default"))).type_url == CLUSTER
    code, _ = await refusal(both, node("envoy-2", "default"))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_client_without_a_certificate_or_from_another_ca_is_refused(
    ads_factory: Any,
) -> None:
    ads = await ads_factory(verify_node=None)
    for channel in (
        ads.channel(None),  # no client certificate
        ads.channel(ads.pki.client("default", ca=trustme.CA())),  # not signed by the CA
    ):
        code, _ = await refusal(channel, node("envoy-1", "default"))
        assert code == grpc.StatusCode.UNAVAILABLE  # the TLS handshake failed
    # Without --ads-verify-node any node with a valid certificate is served.
    good = ads.channel(ads.pki.client("whatever"))
    assert (await first_response(good, node("envoy-1", "default"))).type_url == CLUSTER


async def test_plain_text_clients_cannot_talk_to_a_tls_port(ads_factory: Any) -> None:
    ads = await ads_factory(verify_node=None, client_ca=False)
    plain = grpc.aio.insecure_channel(f"127.0.0.1:{ads.port}")
    ads.channels.append(plain)
    code, _ = await refusal(plain, node("envoy-1", "default"))
    assert code == grpc.StatusCode.UNAVAILABLE
    # TLS without client certificates (no client CA): any TLS client is served.
    anonymous = ads.channel(None)
    assert (await first_response(anonymous, node("envoy-1", "default"))).type_url == CLUSTER


async def test_csds_shows_only_the_proxies_the_callers_certificate_names(
    ads_factory: Any,
) -> None:
    ads = await ads_factory()
    streams = []
    for group in ("default", "edge"):
        client = SotwClient(ads.channel(ads.pki.client(group)))
        await client.request(CLUSTER, node_=node(f"envoy-{group}", group))
        await client.recv(timeout=10)
        streams.append(client)
    fetch = ads.channel(ads.pki.client("edge")).unary_unary(
        CSDS_FETCH,
        request_serializer=csds_pb2.ClientStatusRequest.SerializeToString,
        response_deserializer=csds_pb2.ClientStatusResponse.FromString,
    )
    answer = await fetch(csds_pb2.ClientStatusRequest())
    assert [c.node.id for c in answer.config] == ["envoy-edge"]
    for client in streams:
        client.cancel()


async def test_a_rotated_server_certificate_is_used_without_a_restart(
    ads_factory: Any, pki: Pki
) -> None:
    ads = await ads_factory(verify_node=None)
    key_cert = pki.client("default")
    assert (await first_response(ads.channel(key_cert), node())).type_url == CLUSTER
    new_ca = trustme.CA()
    cert_path, _ = pki.server_files(ca=new_ca)  # rewrites server.crt and server.key
    for path in (cert_path, str(pki.dir / "server.key")):
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    rotated = await first_response(ads.channel(key_cert, trust=new_ca), node())
    assert rotated.type_url == CLUSTER
    code, _ = await refusal(ads.channel(key_cert), node())  # trusts the old CA only
    assert code == grpc.StatusCode.UNAVAILABLE


def test_bad_files_are_clear_errors(pki: Pki) -> None:
    cert, key = pki.server_files()
    other_key = pki.write("other.key", trustme.CA().issue_cert("x").private_key_pem.bytes())
    with pytest.raises(ValueError, match="ADS TLS"):
        AdsTls(cert, other_key).check()  # the key does not match the certificate
    with pytest.raises(ValueError, match="No such file"):
        AdsTls(str(pki.dir / "missing.crt"), key).check()
    not_pem = pki.write("not.pem", b"hello")
    with pytest.raises(ValueError, match="not a PEM"):
        AdsTls(cert, not_pem).check()
    with pytest.raises(ValueError):
        AdsTls(cert, key, None, "group")  # verifying nodes needs client certificates


def test_flags_and_variables() -> None:
    settings = parse_serve(
        [
            "--ads-tls-cert",
            "s.crt",
            "--ads-tls-key",
            "s.key",
            "--ads-client-ca",
            "ca.crt",
            "--ads-verify-node",
            "--admin-tokens",
            "tokens.yaml",
        ],
        {},
    )
    security = settings.security
    assert (security.ads_tls_cert, security.ads_tls_key, security.ads_client_ca) == (
        "s.crt",
        "s.key",
        "ca.crt",
    )
    assert security.ads_verify_node == "group"
    assert security.admin_tokens == "tokens.yaml"
    from_env = parse_serve(
        [],
        {
            "XDS_SERVER_ADS_TLS_CERT": "a.crt",
            "XDS_SERVER_ADS_TLS_KEY": "a.key",
            "XDS_SERVER_ADS_CLIENT_CA": "ca.crt",
            "XDS_SERVER_ADS_VERIFY_NODE": "id+group",
            "XDS_SERVER_INSECURE_ADMIN": "true",
        },
    ).security
    assert (from_env.ads_verify_node, from_env.insecure_admin) == ("id+group", True)
    assert parse_serve([], {}).security.insecure_admin is False
    for argv in (
        ["--ads-tls-cert", "s.crt"],
        ["--ads-verify-node"],
        ["--ads-tls-cert", "s.crt", "--ads-tls-key", "k", "--ads-verify-node"],
    ):
        with pytest.raises(SettingsError):
            parse_serve(argv, {})
    with pytest.raises(SettingsError, match="boolean"):
        parse_serve([], {"XDS_SERVER_INSECURE_ADMIN": "maybe"})


def test_node_messages_are_what_envoy_sends() -> None:
    # The identity check reads node.cluster / node.id from the first request.
    request = discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="a", cluster="g"))
    assert request.HasField("node") and (request.node.id, request.node.cluster) == ("a", "g")
