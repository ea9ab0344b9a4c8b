"""Incremental (delta) ADS: one test per protocol rule, with a grpc.aio client."""

from __future__ import annotations

from tests.conftest import XdsHarness
from tests.support import resources as r
from tests.support.xds_client import DeltaClient, names_of, node
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.status import SyncStatus


def two_clusters(port_a: int = 1, port_b: int = 2) -> Snapshot:
    return Snapshot.build(
        [r.cluster("a"), r.endpoints("a", port_a), r.cluster("b"), r.endpoints("b", port_b)]
    )


def cds_status(xds: XdsHarness, node_id: str = "n1") -> SyncStatus:
    status = xds.registry.get(node_id)
    assert status is not None
    return status.types[CLUSTER].status


async def test_wildcard_then_only_changes_and_removals(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(two_clusters())
    client = DeltaClient(xds.channel)
    await client.request(CLUSTER, node_=node("n1"))
    first = await client.recv()
    assert sorted(names_of(first)) == ["a", "b"]
    await client.ack(first)
    xds.cache.set_snapshots(
        Snapshot.build(
            [r.cluster("a"), r.endpoints("a", 1), r.cluster("c", 3000), r.endpoints("c", 3)]
        )
    )
    update = await client.recv()
    assert names_of(update) == ["c"]
    assert list(update.removed_resources) == []
    removal = await client.recv()  # removals come after every addition
    assert names_of(removal) == []
    assert list(removal.removed_resources) == ["b"]
    assert cds_status(xds) is SyncStatus.STALE
    await client.ack(removal)
    await client.request(LISTENER)  # sentinel
    assert (await client.recv()).type_url == LISTENER
    assert cds_status(xds) is SyncStatus.SYNCED
    client.cancel()


async def test_reconnect_with_initial_versions_receives_only_what_changed(
    xds: XdsHarness,
) -> None:
    xds.cache.set_snapshots(two_clusters())
    client = DeltaClient(xds.channel)
    await client.request(CLUSTER, node_=node("n1"))
    held = {res.name: res.version for res in (await client.recv()).resources}
    client.cancel()
    # While the client is away, "b" changes and "a" stays.
    changed = Snapshot.build(
        [r.cluster("a"), r.endpoints("a", 1), r.cluster("b", 4000), r.endpoints("b", 2)]
    )
    xds.cache.set_snapshots(changed)
    again = DeltaClient(xds.channel)
    await again.request(CLUSTER, initial={**held, "gone": "x"}, node_=node("n1"))
    response = await again.recv()
    assert names_of(response) == ["b"]  # "a" is held at its current version
    assert list(response.removed_resources) == ["gone"]
    again.cancel()


async def test_reconnect_holding_everything_current_receives_nothing(xds: XdsHarness) -> None:
    """Not even an empty response (Envoy counts one as an update); the proxy is in sync."""
    xds.cache.set_snapshots(two_clusters())
    client = DeltaClient(xds.channel)
    await client.request(CLUSTER, node_=node("n1"))
    held = {res.name: res.version for res in (await client.recv()).resources}
    client.cancel()
    again = DeltaClient(xds.channel)
    await again.request(CLUSTER, initial=held, node_=node("n1"))
    await again.request(LISTENER)  # sentinel: a first subscription to nothing is answered
    sentinel = await again.recv()
    assert sentinel.type_url == LISTENER and names_of(sentinel) == []
    assert cds_status(xds) is SyncStatus.SYNCED
    again.cancel()


async def test_named_subscription_before_the_resource_exists(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(two_clusters())
    client = DeltaClient(xds.channel)
    await client.request(ENDPOINT, ["later"], node_=node("n1"))
    absent = await client.recv()
    assert list(absent.removed_resources) == ["later"]
    await client.ack(absent)
    xds.cache.set_snapshots(
        Snapshot.build(
            [r.cluster("a"), r.endpoints("a", 1), r.cluster("later"), r.endpoints("later", 5)]
        )
    )
    arrived = await client.recv()
    assert names_of(arrived) == ["later"]
    client.cancel()


async def test_unsubscribing_a_name_held_through_a_wildcard_removes_nothing(
    xds: XdsHarness,
) -> None:
    xds.cache.set_snapshots(two_clusters())
    client = DeltaClient(xds.channel)
    await client.request(ENDPOINT, ["*", "a"], node_=node("n1"))
    first = await client.recv()
    assert sorted(names_of(first)) == ["a", "b"]
    await client.ack(first)
    await client.request(ENDPOINT, unsubscribe=["a"])
    xds.cache.set_snapshots(two_clusters(port_a=10))
    update = await client.recv()  # "a" is still covered by the wildcard
    assert names_of(update) == ["a"]
    assert list(update.removed_resources) == []
    # Dropping the wildcard too: "b" is no longer covered; a change to it is not sent.
    await client.request(ENDPOINT, ["a", "zz"], unsubscribe=["*"], nonce=update.nonce)
    assert list((await client.recv()).removed_resources) == ["zz"]  # the change is applied
    xds.cache.set_snapshots(two_clusters(port_a=11, port_b=20))
    only_a = await client.recv()
    assert names_of(only_a) == ["a"]
    client.cancel()


async def test_subscription_changes_apply_whatever_the_nonce(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(two_clusters())
    client = DeltaClient(xds.channel)
    await client.request(ENDPOINT, ["a"], node_=node("n1"))
    first = await client.recv()
    await client.request(ENDPOINT, ["b"], nonce="99999")  # a nonce we never sent
    second = await client.recv()
    assert names_of(second) == ["b"]
    assert first.nonce != second.nonce
    client.cancel()


async def test_nack_is_recorded_and_the_version_not_resent(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(two_clusters())
    client = DeltaClient(xds.channel)
    await client.request(CLUSTER, node_=node("n1"))
    await client.ack(await client.recv())
    xds.cache.set_snapshots(
        Snapshot.build(
            [r.cluster("a", 5), r.endpoints("a", 1), r.cluster("b"), r.endpoints("b", 2)]
        )
    )
    rejected = await client.recv()
    await client.request(CLUSTER, nonce=rejected.nonce, error="invalid connect_timeout")
    await client.request(LISTENER)  # sentinel: the rejected cluster must not come back
    assert (await client.recv()).type_url == LISTENER
    status = xds.registry.get("n1")
    assert status is not None
    assert status.types[CLUSTER].status is SyncStatus.NACKED
    assert status.types[CLUSTER].last_nack is not None
    assert status.types[CLUSTER].last_nack.message == "invalid connect_timeout"
    client.cancel()


async def test_push_order_additions_first_removals_last(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(r.snapshot(cluster_name="old"))
    client = DeltaClient(xds.channel)
    for type_url, names in ((CLUSTER, []), (ENDPOINT, ["old"]), (LISTENER, []), (ROUTE, ["http"])):
        await client.request(type_url, names, node_=node("n1"))
        await client.ack(await client.recv())
    await client.request(ENDPOINT, ["new"])  # Envoy subscribes as soon as CDS names it
    await client.ack(await client.recv())  # "new" reported absent for now
    xds.cache.set_snapshots(r.snapshot(cluster_name="new"))
    received = [await client.recv() for _ in range(4)]
    kinds = [(x.type_url, names_of(x), list(x.removed_resources)) for x in received]
    assert kinds == [
        (CLUSTER, ["new"], []),
        (ENDPOINT, ["new"], []),
        (ROUTE, ["http"], []),
        (CLUSTER, [], ["old"]),
    ]
    client.cancel()
