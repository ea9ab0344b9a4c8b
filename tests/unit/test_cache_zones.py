"""Zonal views of a group snapshot (``xds_server.cache.zones`` and the cache's memo of them).

A proxy that names its zone gets its group's snapshot with every assignment re-prioritised:
own zone (local datacenter) first, the local datacenter's other zones next, then the other
datacenters. Everything else is the group snapshot's own objects.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.status.v3 import csds_pb2

from tests.conftest import XdsHarness
from tests.support import resources as r
from tests.support.xds_client import DeltaClient, SotwClient
from xds_server.cache.snapshot import Snapshot, content_version
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.cache.zones import zonal_assignment, zonal_snapshot

# (priority, region, zone, port) per locality, as the translation lays them out.
_LAYOUT = (
    (0, "dc1", "", 8000),
    (0, "dc1", "a", 8001),
    (0, "dc1", "b", 8002),
    (1, "dc2", "a", 8003),
    (2, "dc3", "c", 8004),
)


def _assignment(name: str = "web", layout: tuple[tuple[int, str, str, int], ...] = _LAYOUT) -> Any:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for priority, region, zone, port in layout:
        locality = cla.endpoints.add(
            locality=base_pb2.Locality(region=region, zone=zone), priority=priority
        )
        locality.lb_endpoints.append(r.endpoints(name, port).endpoints[0].lb_endpoints[0])
    return cla


def _priorities(cla: Any) -> list[tuple[int, str, str]]:
    return [(lle.priority, lle.locality.region, lle.locality.zone) for lle in cla.endpoints]


def _snapshot(*assignments: Any, previous: Snapshot | None = None) -> Snapshot:
    names = [a.cluster_name for a in assignments]
    messages = [r.cluster(n) for n in names] + list(assignments)
    messages += [r.route_config("edge", names[0]), r.listener("http", 10000, "edge")]
    return Snapshot.build(messages, previous)


def test_own_zone_first_then_other_zones_then_other_datacenters_in_order() -> None:
    zonal = zonal_assignment(_assignment(), "a")
    assert _priorities(zonal) == [
        (0, "dc1", "a"),
        (1, "dc1", ""),  # no zone counts as another zone
        (1, "dc1", "b"),
        (2, "dc2", "a"),  # zone a of another datacenter is still another datacenter
        (3, "dc3", "c"),
    ]
    # Nothing else moves: the endpoints go with their locality.
    ports = {lle.locality.zone + lle.locality.region: lle for lle in zonal.endpoints}
    assert ports["adc1"].lb_endpoints[0].endpoint.address.socket_address.port_value == 8001


def test_priorities_stay_dense_and_a_zone_with_nothing_keeps_the_assignment() -> None:
    layout = ((0, "dc1", "b", 8000), (1, "dc2", "a", 8001))
    cla = _assignment(layout=layout)
    assert zonal_assignment(cla, "nowhere") is cla
    assert zonal_assignment(cla, "a") is cla  # its zone a is in another datacenter
    assert zonal_assignment(cla, "") is cla
    only_own = _assignment(layout=((0, "dc1", "a", 8000), (1, "dc2", "x", 8001)))
    assert zonal_assignment(only_own, "a") is only_own
    mixed = _assignment(layout=((0, "dc1", "a", 8000), (0, "dc1", "b", 8001)))
    assert [p for p, _, _ in _priorities(zonal_assignment(mixed, "b"))] == [0, 1]
    assert _priorities(zonal_assignment(mixed, "b"))[0] == (0, "dc1", "b")


def test_zonal_assignment_is_deterministic_and_leaves_its_input_alone() -> None:
    cla = _assignment()
    before = cla.SerializeToString(deterministic=True)
    first = zonal_assignment(cla, "b").SerializeToString(deterministic=True)
    second = zonal_assignment(_assignment(), "b").SerializeToString(deterministic=True)
    assert first == second
    assert cla.SerializeToString(deterministic=True) == before
    assert first != before


def test_only_endpoints_differ_and_versions_hash_the_zonal_bytes() -> None:
    snapshot = _snapshot(_assignment("web"), _assignment("api", ((0, "dc1", "b", 9000),)))
    view, _ = zonal_snapshot(snapshot, "a")
    assert view is not snapshot
    for type_url in (CLUSTER, LISTENER, ROUTE):
        assert view.of_type(type_url) is snapshot.of_type(type_url)
        assert view.version(type_url) == snapshot.version(type_url)
    web = view.of_type(ENDPOINT)["web"]
    assert web.body == zonal_assignment(_assignment("web"), "a").SerializeToString(
        deterministic=True
    )
    assert web.version == content_version(web.body) != snapshot.of_type(ENDPOINT)["web"].version
    # "api" has nothing in zone a: the group's resource itself.
    assert view.of_type(ENDPOINT)["api"] is snapshot.of_type(ENDPOINT)["api"]
    assert view.messages[ENDPOINT]["web"] == zonal_assignment(_assignment("web"), "a")


def test_no_zone_gets_the_group_snapshot_byte_for_byte() -> None:
    cache = SnapshotCache()
    snapshot = _snapshot(_assignment())
    cache.set_snapshots(snapshot)
    assert cache.snapshot_for("default", "") is snapshot
    assert cache.snapshot_for("default") is snapshot
    assert cache.snapshot_for("default", "a") is not snapshot
    # A zone with no endpoint of its own is served the group's snapshot too.
    assert cache.snapshot_for("default", "nowhere") is snapshot


def test_views_are_memoised_per_snapshot_and_zone_and_dropped_with_the_snapshot() -> None:
    cache = SnapshotCache()
    cache.set_snapshots(_snapshot(_assignment()))
    view_a = cache.snapshot_for("default", "a")
    assert cache.snapshot_for("default", "a") is view_a
    assert cache.snapshot_for("other-group", "a") is view_a  # same snapshot, same view
    view_b = cache.snapshot_for("default", "b")
    assert view_b is not view_a
    group_snapshot = weakref.ref(cache.snapshot_for("default"))
    gone = weakref.ref(view_a)
    del view_a, view_b
    cache.set_snapshots(_snapshot(_assignment(), _assignment("api")))
    gc.collect()
    assert group_snapshot() is None
    assert gone() is None
    views = cache.state.views
    assert views._views.keys() == set()  # the memo itself
    assert cache.snapshot_for("default", "a") is not None
    assert views.memoised(cache.snapshot_for("default")) == 1


def test_a_view_knows_what_changed_since_the_view_of_its_ancestor() -> None:
    cache = SnapshotCache()
    first = _snapshot(_assignment("web"), _assignment("api"))
    cache.set_snapshots(first)
    old_view = cache.snapshot_for("default", "a")
    moved = _assignment("api", ((0, "dc1", "a", 9100), (0, "dc1", "b", 9101)))
    second = _snapshot(_assignment("web"), moved, previous=first)
    cache.set_snapshots(second)
    new_view = cache.snapshot_for("default", "a")
    changes = new_view.changes_since(old_view.serial)
    assert changes is not None
    assert changes[ENDPOINT].updated == frozenset({"api"})
    assert CLUSTER not in changes
    # The unchanged assignment's zonal resource is reused, not re-serialised.
    assert new_view.of_type(ENDPOINT)["web"] is old_view.of_type(ENDPOINT)["web"]
    # The group snapshot's own serial is no ancestor of the view.
    assert new_view.changes_since(first.serial) is None


async def test_a_sotw_stream_in_a_zone_is_served_its_zonal_view(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(_snapshot(_assignment()))
    zoned = base_pb2.Node(id="n-a", cluster="default", locality=base_pb2.Locality(zone="a"))
    plain = base_pb2.Node(id="n-none", cluster="default")
    got = {}
    for node in (zoned, plain):
        client = SotwClient(xds.channel)
        await client.request(ENDPOINT, ["web"], node_=node)
        response = await client.recv()
        cla = endpoint_pb2.ClusterLoadAssignment()
        response.resources[0].Unpack(cla)
        got[node.id] = (response, cla)
        client.cancel()
    assert _priorities(got["n-a"][1])[0] == (0, "dc1", "a")
    plain_response = got["n-none"][0]
    assert plain_response.resources[0].value == (
        xds.cache.snapshot_for("default").of_type(ENDPOINT)["web"].body
    )


async def test_a_delta_stream_in_a_zone_gets_zonal_versions_and_only_changes(
    xds: XdsHarness,
) -> None:
    first = _snapshot(_assignment("web"), _assignment("api"))
    xds.cache.set_snapshots(first)
    node = base_pb2.Node(id="d-a", cluster="default", locality=base_pb2.Locality(zone="a"))
    client = DeltaClient(xds.channel)
    await client.request(ENDPOINT, ["web", "api"], node_=node)
    response: discovery_pb2.DeltaDiscoveryResponse = await client.recv()
    view = xds.cache.snapshot_for("default", "a")
    assert {x.name: x.version for x in response.resources} == {
        n: res.version for n, res in view.of_type(ENDPOINT).items()
    }
    await client.ack(response)
    moved = _assignment("api", ((0, "dc1", "a", 9100),))
    xds.cache.set_snapshots(_snapshot(_assignment("web"), moved, previous=first))
    update = await client.recv()
    assert [x.name for x in update.resources] == ["api"]
    client.cancel()


async def test_csds_shows_the_zonal_assignment_a_zoned_proxy_holds(xds: XdsHarness) -> None:
    xds.cache.set_snapshots(_snapshot(_assignment()))
    zoned = base_pb2.Node(id="csds-a", cluster="default", locality=base_pb2.Locality(zone="a"))
    client = SotwClient(xds.channel)
    await client.request(ENDPOINT, ["web"], node_=zoned)
    response = await client.recv()
    await client.ack(response, ["web"])
    await client.request(CLUSTER)  # sentinel: the ACK above was read first
    await client.recv()
    call = xds.channel.unary_unary(
        "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus",
        request_serializer=csds_pb2.ClientStatusRequest.SerializeToString,
        response_deserializer=csds_pb2.ClientStatusResponse.FromString,
    )
    [config] = (await call(csds_pb2.ClientStatusRequest())).config
    [entry] = [c for c in config.generic_xds_configs if c.type_url == ENDPOINT]
    assert entry.config_status == csds_pb2.SYNCED
    assert (
        entry.version_info
        == xds.cache.snapshot_for("default", "a").of_type(ENDPOINT)["web"].version
    )
    assert entry.xds_config.value == response.resources[0].value  # what the proxy holds
    client.cancel()


def test_each_group_reuses_its_own_previous_views_endpoints() -> None:
    cache = SnapshotCache()
    edge = _snapshot(_assignment("web"))
    other = _assignment("web", ((0, "dc1", "a", 7000), (0, "dc1", "b", 7001)))
    api = _snapshot(other)
    cache.set_snapshots(edge, {"api": api})
    before = {g: cache.snapshot_for(g, "a").of_type(ENDPOINT)["web"] for g in ("edge", "api")}
    assert before["edge"] is not before["api"]
    edge2 = _snapshot(_assignment("web"), _assignment("new"), previous=edge)
    api2 = _snapshot(other, _assignment("new"), previous=api)
    cache.set_snapshots(edge2, {"api": api2})
    for group in ("api", "edge"):  # the other order than the first time
        assert cache.snapshot_for(group, "a").of_type(ENDPOINT)["web"] is before[group]


def test_zones_beyond_the_bound_are_served_correctly_without_a_memo() -> None:
    cache = SnapshotCache()
    cache.set_snapshots(_snapshot(_assignment(layout=((0, "dc1", "z0", 1), (0, "dc1", "x", 2)))))
    group = cache.snapshot_for("default")
    for number in range(300):  # more zones than are memoised
        zone = f"z{number}"
        view = cache.snapshot_for("default", zone)
        expected = zonal_assignment(group.messages[ENDPOINT]["web"], zone)
        assert view.messages[ENDPOINT]["web"] == expected
    assert cache.state.views.memoised(group) <= 256
    assert _priorities(cache.snapshot_for("default", "z0").messages[ENDPOINT]["web"])[0][2] == "z0"


async def test_the_proxy_config_view_shows_the_zonal_assignment_a_proxy_holds(
    xds: XdsHarness,
) -> None:
    from xds_server.admin.proxy_views import proxy_config

    xds.cache.set_snapshots(_snapshot(_assignment()))
    zoned = base_pb2.Node(id="view-a", cluster="default", locality=base_pb2.Locality(zone="a"))
    client = SotwClient(xds.channel)
    await client.request(ENDPOINT, ["web"], node_=zoned)
    await client.ack(await client.recv(), ["web"])
    await client.request(CLUSTER)  # sentinel: the ACK above was read first
    await client.recv()
    proxy = xds.registry.get("view-a")
    assert proxy is not None and proxy.zone == "a"
    [held] = proxy_config(proxy, xds.cache)["types"]["EDS"]["resources"]
    assert held["resource"] is not None
    assert held["resource"]["endpoints"][0]["locality"]["zone"] == "a"
    client.cancel()
