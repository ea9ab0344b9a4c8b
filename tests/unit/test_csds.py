"""CSDS answers with each proxy's sync status, per resource, honouring node matchers."""

from __future__ import annotations

from typing import Any

from envoy.service.status.v3 import csds_pb2
from envoy.type.matcher.v3 import node_pb2, string_pb2

from tests.conftest import XdsHarness
from tests.support import resources as r
from tests.support.xds_client import SotwClient, node
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.types import CLUSTER, LISTENER

FETCH = "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus"


async def fetch(xds: XdsHarness, request: Any | None = None) -> Any:
    call = xds.channel.unary_unary(
        FETCH,
        request_serializer=csds_pb2.ClientStatusRequest.SerializeToString,
        response_deserializer=csds_pb2.ClientStatusResponse.FromString,
    )
    return await call(request or csds_pb2.ClientStatusRequest())


def by_name(config: Any) -> dict[tuple[str, str], Any]:
    return {(c.type_url, c.name): c for c in config.generic_xds_configs}


async def test_synced_and_nacked_proxies_as_csds_reports_them(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot())
    good = SotwClient(xds.channel)
    await good.request(CLUSTER, node_=node("good-1", "edge"))
    await good.ack(await good.recv())
    await good.request(LISTENER)  # sentinel: the ACK above was read first
    await good.recv()
    bad = SotwClient(xds.channel)
    await bad.request(CLUSTER, node_=node("bad-1", "edge"))
    response = await bad.recv()
    await bad.nack(response, "cluster 'web': bad things")
    await bad.request(LISTENER)  # sentinel
    await bad.recv()

    answer = await fetch(xds)
    configs = {c.node.id: c for c in answer.config}
    assert set(configs) == {"good-1", "bad-1"}
    web = by_name(configs["good-1"])[(CLUSTER, "web")]
    assert web.config_status == csds_pb2.SYNCED
    assert web.version_info == xds.cache.snapshot_for("edge").of_type(CLUSTER)["web"].version
    assert web.xds_config.type_url == CLUSTER  # the resource itself is included
    rejected = by_name(configs["bad-1"])[(CLUSTER, "web")]
    assert rejected.config_status == csds_pb2.ERROR
    assert rejected.error_state.details == "cluster 'web': bad things"
    listener = by_name(configs["good-1"])[(LISTENER, "http")]
    assert listener.config_status == csds_pb2.STALE  # sent, not ACKed yet
    good.cancel()
    bad.cancel()


async def test_node_matchers_and_excluded_contents(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(Snapshot.build([r.cluster("a"), r.endpoints("a", 1)]))
    clients = []
    for node_id in ("edge-1", "edge-2", "mesh-1"):
        client = SotwClient(xds.channel)
        await client.request(CLUSTER, node_=node(node_id))
        await client.recv()
        clients.append(client)
    request = csds_pb2.ClientStatusRequest(
        node_matchers=[
            node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(prefix="EDGE-", ignore_case=True))
        ],
        exclude_resource_contents=True,
    )
    answer = await fetch(xds, request)
    assert sorted(c.node.id for c in answer.config) == ["edge-1", "edge-2"]
    for config in answer.config:
        assert not config.generic_xds_configs[0].HasField("xds_config")
    regex = csds_pb2.ClientStatusRequest(
        node_matchers=[
            node_pb2.NodeMatcher(
                node_id=string_pb2.StringMatcher(safe_regex={"regex": "mesh-[0-9]+"})
            )
        ]
    )
    assert [c.node.id for c in (await fetch(xds, regex)).config] == ["mesh-1"]
    for client in clients:
        client.cancel()


def test_secrets_are_redacted_in_status() -> None:
    from envoy.config.core.v3 import base_pb2
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

    from xds_server.cache.redaction import REDACTED, redacted_body
    from xds_server.cache.types import SECRET

    secret = secret_pb2.Secret(name="certificate/shop")
    secret.tls_certificate.certificate_chain.inline_string = "-----BEGIN CERTIFICATE-----"
    secret.tls_certificate.private_key.inline_string = "-----BEGIN PRIVATE KEY-----\nAAAA"
    shown = secret_pb2.Secret.FromString(redacted_body(SECRET, secret.SerializeToString()))
    assert shown.tls_certificate.private_key == base_pb2.DataSource(inline_string=REDACTED)
    assert shown.tls_certificate.certificate_chain.inline_string.startswith("-----BEGIN CERT")
    assert b"PRIVATE KEY" not in redacted_body(SECRET, secret.SerializeToString())
