"""What delta streams share: subscription sets, removal lists, held maps and pushed bodies.

A fleet of delta clients subscribes alike and holds alike; each of them must cost the server
what a SotW stream costs, not a decoded name list, a name -> version dictionary and a joined
body of its own (issue 18: connect storm and memory per proxy). The protocol stays exact.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import XdsHarness
from tests.support import resources as r
from tests.support.xds_client import DeltaClient, names_of, node
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.types import CLUSTER, ENDPOINT
from xds_server.server import shared
from xds_server.server.delta import DeltaStream, subscribed_names
from xds_server.server.sotw import names_key
from xds_server.server.subscription import remember_names

NAMES = [f"svc-{i:03d}" for i in range(40)]  # above the size from which names are keyed


def world(port_offset: int = 0, previous: Snapshot | None = None) -> Snapshot:
    messages: list[Any] = []
    for i, name in enumerate(NAMES):
        messages.append(r.cluster(name))
        messages.append(r.endpoints(name, 20000 + i + port_offset))
    return Snapshot.build(messages, previous=previous)


def delta_request(names: list[str], **fields: Any) -> Any:
    from envoy.service.discovery.v3 import discovery_pb2

    return discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT, resource_names_subscribe=names, **fields
    )


def test_equal_subscriptions_are_recognised_from_their_bytes_and_share_one_set() -> None:
    first = subscribed_names(delta_request(NAMES, response_nonce="3"))
    second = subscribed_names(delta_request(NAMES, response_nonce="7"))
    assert isinstance(first, frozenset) and first == frozenset(NAMES)
    assert second is first
    assert subscribed_names(delta_request(NAMES[:-1])) != first


def test_a_sotw_request_naming_the_same_list_shares_the_set() -> None:
    from envoy.service.discovery.v3 import discovery_pb2

    sotw = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=NAMES[::-1])
    shared_set = remember_names(names_key(sotw), NAMES[::-1])
    assert subscribed_names(delta_request(NAMES[::-1])) is shared_set


def test_the_node_and_small_or_mixed_requests_are_left_alone() -> None:
    with_node = delta_request(NAMES, node=node("n1"))
    subscribed_names(with_node)
    assert with_node.node.id == "n1"  # the proxy's status keeps the node
    assert subscribed_names(delta_request(["a", "b"])) == ["a", "b"]
    mixed = delta_request(NAMES, resource_names_unsubscribe=["x"])
    assert subscribed_names(mixed) == NAMES
    assert list(mixed.resource_names_unsubscribe) == ["x"]


def test_names_that_do_not_exist_are_listed_once_per_selection() -> None:
    snapshot = world()
    names = frozenset([*NAMES[:3], "missing-b", "missing-a"])
    selection = shared.selection(snapshot, ENDPOINT, names)
    assert selection.absent == ("missing-a", "missing-b")
    assert [res.name for res in selection.resources] == NAMES[:3]


async def test_a_reconnect_holding_everything_current_gets_nothing_with_many_names(
    xds: XdsHarness,
) -> None:
    """The initial versions are read before the request's name fields are cleared."""
    snapshot = world()
    xds.cache.set_snapshots(snapshot)
    held = {name: res.version for name, res in snapshot.of_type(ENDPOINT).items()}
    client = DeltaClient(xds.channel)
    await client.request(ENDPOINT, NAMES, initial=held, node_=node("n1"))
    await client.request(CLUSTER)  # sentinel: the next response must be the clusters
    response = await client.recv()
    assert response.type_url == CLUSTER
    client.cancel()


async def test_after_every_endpoint_set_changes_streams_share_what_they_hold(
    xds: XdsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stream then holds the new snapshot's shared name -> version map (not a copy of
    its own: a thousand names per stream at scale), and the changed resources are chosen and
    joined once for all of them."""
    joins = [0]
    join = DeltaStream._joined

    def counted(updates: Any, removed: Any) -> Any:
        joins[0] += 1
        return join(updates, removed)

    monkeypatch.setattr(DeltaStream, "_joined", staticmethod(counted))
    first = world()
    xds.cache.set_snapshots(first)
    clients = []
    for node_id in ("n1", "n2"):
        client = DeltaClient(xds.channel)
        clients.append(client)
        await client.request(ENDPOINT, NAMES, node_=node(node_id))
        await client.ack(await client.recv())
    second = world(1, previous=first)
    xds.cache.set_snapshots(second)
    for client in clients:
        update = await client.recv()
        assert sorted(names_of(update)) == NAMES
        assert [res.version for res in update.resources] == [
            second.of_type(ENDPOINT)[name].version for name in sorted(NAMES)
        ]
        await client.ack(update)
    held = []
    for node_id in ("n1", "n2"):
        status = xds.registry.get(node_id)
        assert status is not None
        held.append(status.types[ENDPOINT].held)
    assert held[0] is held[1] and type(held[0]) is not dict
    assert dict(held[0]) == {n: res.version for n, res in second.of_type(ENDPOINT).items()}
    assert joins[0] == 1
    for client in clients:
        client.cancel()


async def test_a_removal_makes_the_stream_keep_its_own_map(xds: XdsHarness) -> None:
    first = world()
    xds.cache.set_snapshots(first)
    client = DeltaClient(xds.channel)
    await client.request(ENDPOINT, NAMES, node_=node("n1"))
    await client.ack(await client.recv())
    messages: list[Any] = []
    for i, name in enumerate(NAMES[1:], start=1):
        messages.append(r.cluster(name))
        messages.append(r.endpoints(name, 30000 + i))
    xds.cache.set_snapshots(Snapshot.build(messages, previous=first))
    update = await client.recv()
    assert sorted(names_of(update)) == NAMES[1:]
    removal = await client.recv()
    assert list(removal.removed_resources) == [NAMES[0]]
    await client.ack(removal)
    status = xds.registry.get("n1")
    assert status is not None
    held = status.types[ENDPOINT].held
    assert type(held) is dict and held[NAMES[0]] == ""  # told it does not exist
    client.cancel()
