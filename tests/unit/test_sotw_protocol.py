"""State-of-the-world ADS: one test per protocol rule, with a grpc.aio client.

Absence of a response is proven with a sentinel: after the step that must not produce a
response, the test causes one that must, and checks that it is the next thing received.
"""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from tests.conftest import XdsHarness
from tests.support import resources as r
from tests.support.xds_client import SotwClient, names_of, node
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from xds_server.status import SyncStatus

CDS_ONLY = "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters"


async def _connect(
    xds: XdsHarness, node_id: str = "n1"
) -> tuple[SotwClient, discovery_pb2.DiscoveryResponse]:
    client = SotwClient(xds.channel)
    await client.request(CLUSTER, node_=node(node_id))
    return client, await client.recv()


async def test_wildcard_cds_gets_every_cluster_and_the_ack_is_recorded(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot())
    client, response = await _connect(xds)
    assert response.type_url == CLUSTER
    assert names_of(response) == ["web"]
    assert response.version_info == xds.cache.snapshot_for("default").version(CLUSTER)
    await client.ack(response)
    # Sentinel: the ACK must not be answered; the next response is the LDS we ask for.
    await client.request(LISTENER)
    assert (await client.recv()).type_url == LISTENER
    status = xds.registry.get("n1")
    assert status is not None
    assert status.types[CLUSTER].status is SyncStatus.SYNCED
    assert status.types[CLUSTER].acked_version == response.version_info
    client.cancel()


async def test_a_new_snapshot_is_pushed_and_an_unchanged_type_is_not(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot(ports=(1,)))
    client, cds = await _connect(xds)
    await client.ack(cds)
    await client.request(ENDPOINT, ["web"])
    eds = await client.recv()
    await client.ack(eds, ["web"])
    xds.cache.set_snapshots(r.snapshot(ports=(2,)))  # only endpoints change
    update = await client.recv()
    assert update.type_url == ENDPOINT
    assert update.version_info != eds.version_info
    client.cancel()


async def test_nacked_version_is_not_resent_and_the_nack_is_recorded(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot())
    client, first = await _connect(xds)
    await client.ack(first)
    await client.request(LISTENER)
    lds = await client.recv()
    await client.ack(lds)
    # A new cluster version, which the client rejects.
    bad = Snapshot.build(
        [
            r.cluster("web", connect_timeout_ms=7),
            r.endpoints("web", 8081),
            r.listener("http", 10000, "http"),
            r.route_config("http", "web"),
        ]
    )
    xds.cache.set_snapshots(bad)
    rejected = await client.recv()
    assert rejected.type_url == CLUSTER
    await client.nack(
        rejected, "bad cluster: connect_timeout too small", version=first.version_info
    )
    await client.request(ROUTE, ["http"])  # answered only once the NACK before it is read
    assert (await client.recv()).type_url == ROUTE
    status = xds.registry.get("n1")
    assert status is not None
    # A change of listeners only: the next response must be LDS, not the rejected CDS again.
    moved = Snapshot.build(
        [
            r.cluster("web", connect_timeout_ms=7),
            r.endpoints("web", 8081),
            r.listener("http", 10001, "http"),
            r.route_config("http", "web"),
        ]
    )
    xds.cache.set_snapshots(moved)
    following = await client.recv()
    assert following.type_url == LISTENER
    cds_status = status.types[CLUSTER]
    assert cds_status.status is SyncStatus.NACKED
    assert cds_status.last_nack is not None
    assert cds_status.last_nack.message == "bad cluster: connect_timeout too small"
    assert cds_status.last_nack.version == rejected.version_info
    # The next cluster change is sent again.
    xds.cache.set_snapshots(r.snapshot(listener_port=10001))
    fixed = await client.recv()
    assert fixed.type_url == CLUSTER
    assert fixed.version_info not in (rejected.version_info,)
    client.cancel()


async def test_stale_nonce_is_ignored(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot(ports=(1,)))
    client = SotwClient(xds.channel)
    await client.request(ENDPOINT, ["web"], node_=node("n1"))
    first = await client.recv()
    xds.cache.set_snapshots(r.snapshot(ports=(2,)))
    second = await client.recv()
    assert second.nonce != first.nonce
    # A late request with the first nonce asks for another name: stale, so ignored.
    await client.request(ENDPOINT, ["other"], version=first.version_info, nonce=first.nonce)
    # Sentinel: a change to "web" is still delivered, proving "web" is still subscribed.
    xds.cache.set_snapshots(r.snapshot(ports=(3,)))
    third = await client.recv()
    assert names_of(third) == ["web"]
    status = xds.registry.get("n1")
    assert status is not None and status.types[ENDPOINT].acked_at is None
    client.cancel()


async def test_subscription_before_the_resource_exists(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot())
    client = SotwClient(xds.channel)
    await client.request(ENDPOINT, ["later"], node_=node("n1"))
    # Nothing exists yet, so nothing is sent. Sentinel: a CDS request is answered first.
    await client.request(CLUSTER)
    assert (await client.recv()).type_url == CLUSTER
    xds.cache.set_snapshots(
        Snapshot.build(
            [
                *r.snapshot().messages[CLUSTER].values(),
                r.cluster("later"),
                r.endpoints("later", 9),
                r.endpoints("web", 8081),
                r.listener("http", 10000, "http"),
                r.route_config("http", "web"),
            ]
        )
    )
    cds = await client.recv()
    assert cds.type_url == CLUSTER
    eds = await client.recv()
    assert eds.type_url == ENDPOINT
    assert names_of(eds) == ["later"]
    client.cancel()


async def test_ads_order_when_a_cluster_and_a_route_to_it_arrive_together(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot(cluster_name="a"))
    client, cds = await _connect(xds)
    await client.ack(cds)
    await client.request(ENDPOINT, ["a"])
    await client.ack(await client.recv(), ["a"])
    await client.request(LISTENER)
    await client.ack(await client.recv())
    await client.request(ROUTE, ["http"])
    await client.ack(await client.recv(), ["http"])
    # One snapshot adds cluster "b" and points the route at it.
    xds.cache.set_snapshots(
        Snapshot.build(
            [
                r.cluster("a"),
                r.endpoints("a", 1),
                r.cluster("b"),
                r.endpoints("b", 2),
                r.listener("http", 10000, "http"),
                r.route_config("http", "b"),
            ]
        )
    )
    order = [(await client.recv()) for _ in range(3)]
    assert [x.type_url for x in order] == [CLUSTER, ENDPOINT, ROUTE]
    assert names_of(order[0]) == ["a", "b"]
    assert names_of(order[1]) == ["a"]  # "a" moved to port 1; "b" is not subscribed yet
    client.cancel()


async def test_removed_cluster_goes_last_make_before_break(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot(cluster_name="old"))
    client, cds = await _connect(xds)
    await client.ack(cds)
    await client.request(ENDPOINT, ["old"])
    await client.ack(await client.recv(), ["old"])
    await client.request(LISTENER)
    await client.ack(await client.recv())
    await client.request(ROUTE, ["http"])
    await client.ack(await client.recv(), ["http"])
    xds.cache.set_snapshots(r.snapshot(cluster_name="new"))
    received = [await client.recv() for _ in range(3)]
    assert [x.type_url for x in received] == [CLUSTER, ROUTE, CLUSTER]
    assert names_of(received[0]) == ["new", "old"]
    assert names_of(received[2]) == ["new"]
    client.cancel()


async def test_eds_is_answered_again_after_a_cds_update(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot())
    client, cds = await _connect(xds)
    await client.ack(cds)
    await client.request(ENDPOINT, ["web"])
    eds = await client.recv()
    await client.ack(eds, ["web"])
    # The cluster changes but its endpoints do not; Envoy re-creates the cluster and asks
    # for its endpoints again: the server must answer, or the cluster never warms.
    xds.cache.set_snapshots(
        Snapshot.build(
            [
                r.cluster("web", connect_timeout_ms=2000),
                r.endpoints("web", 8081),
                r.listener("http", 10000, "http"),
                r.route_config("http", "web"),
            ]
        )
    )
    cds2 = await client.recv()
    assert cds2.type_url == CLUSTER
    await client.ack(cds2)
    await client.request(ENDPOINT, ["web"], version=eds.version_info, nonce=eds.nonce)
    again = await client.recv()
    assert again.type_url == ENDPOINT
    assert names_of(again) == ["web"]
    client.cancel()


async def test_endpoint_change_sends_only_the_changed_assignment(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(
        Snapshot.build([r.cluster("a"), r.endpoints("a", 1), r.cluster("b"), r.endpoints("b", 2)])
    )
    client = SotwClient(xds.channel)
    await client.request(ENDPOINT, ["a", "b"], node_=node("n1"))
    first = await client.recv()
    assert sorted(names_of(first)) == ["a", "b"]
    await client.ack(first, ["a", "b"])
    xds.cache.set_snapshots(
        Snapshot.build([r.cluster("a"), r.endpoints("a", 1), r.cluster("b"), r.endpoints("b", 3)])
    )
    assert names_of(await client.recv()) == ["b"]
    client.cancel()


async def test_explicit_and_legacy_wildcards(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(Snapshot.build([r.secret("s1"), r.secret("s2")]))
    client = SotwClient(xds.channel)
    await client.request(SECRET, ["*"], node_=node("n1"))
    assert sorted(names_of(await client.recv())) == ["s1", "s2"]
    other = SotwClient(xds.channel)
    await other.request(LISTENER, node_=node("n2"))  # legacy wildcard: empty list
    lds = await other.recv()
    await other.ack(lds)  # still an empty list: stays wildcard
    xds.cache.set_snapshots(r.snapshot())
    assert names_of(await other.recv()) == ["http"]
    client.cancel()
    other.cancel()


async def test_per_type_service_serves_its_type_only(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot())
    client = SotwClient(xds.channel, CDS_ONLY)
    await client.request("", node_=node("n1"))  # type_url may be left out on per-type streams
    response = await client.recv()
    assert response.type_url == CLUSTER
    assert names_of(response) == ["web"]
    await client.request(LISTENER)
    import grpc

    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT


async def test_reconnect_with_an_old_nonce_is_answered(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot())
    client, cds = await _connect(xds)
    client.cancel()
    again = SotwClient(xds.channel)
    await again.request(CLUSTER, version=cds.version_info, nonce=cds.nonce, node_=node("n1"))
    response = await again.recv()
    assert names_of(response) == ["web"]
    again.cancel()


async def test_nothing_is_answered_before_the_first_snapshot(xds: XdsHarness) -> None:
    # A freshly started server has published nothing: Envoy must not get an empty config.
    client = SotwClient(xds.channel)
    await client.request(CLUSTER, node_=node("early"))
    await client.request(LISTENER)
    assert xds.registry.get("early") is None  # the requests wait, unprocessed
    xds.cache.set_snapshots(r.snapshot())
    first = await client.recv()
    assert first.type_url == CLUSTER
    assert names_of(first) == ["web"]
    assert (await client.recv()).type_url == LISTENER
    client.cancel()
