"""The benchmark simulator still works: ~20 simulated Envoys against an in-process server.

No timing is asserted (benchmarks print figures; tests do not judge them): every simulated
proxy must follow CDS → EDS and LDS → RDS, ACK everything, and see a pushed change.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest

from bench.simulator.fleet import Change, Fleet, FleetSpec
from bench.workload import Workload, service_name
from tests.support.server_thread import ThreadedXds
from xds_server.cache.snapshot import EMPTY_SNAPSHOT, Snapshot
from xds_server.model.inventory import Health
from xds_server.translate import translate

PROXIES = 20
WORKLOAD = Workload(services=30, endpoints=3, routes=3)


@pytest.fixture
def server() -> Iterator[ThreadedXds]:
    xds = ThreadedXds().start()
    snapshot = Snapshot.build(
        translate(WORKLOAD.inventory(), WORKLOAD.config()).default.messages(),
        previous=EMPTY_SNAPSHOT,
    )
    xds.call(xds.cache.set_snapshots, snapshot)
    try:
        yield xds
    finally:
        xds.stop()


def _flap(xds: ThreadedXds) -> float:
    """Make one endpoint of the first service unhealthy; returns when (monotonic)."""
    inventory = WORKLOAD.inventory()
    service = inventory.services[service_name(0)]
    endpoints = list(service.endpoints)
    endpoints[0] = dataclasses.replace(endpoints[0], health=Health.UNHEALTHY)
    changed = inventory.with_service(dataclasses.replace(service, endpoints=tuple(endpoints)))
    previous = xds.call(lambda: xds.cache.state.default)
    snapshot = Snapshot.build(
        translate(changed, WORKLOAD.config()).default.messages(), previous=previous
    )
    at = time.monotonic()
    xds.call(xds.cache.set_snapshots, snapshot)
    return at


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_simulated_proxies_follow_and_ack_everything(server: ThreadedXds, mode: str) -> None:
    spec = FleetSpec(
        f"127.0.0.1:{server.port}",
        PROXIES,
        mode=mode,
        workers=2,
        streams_per_channel=8,
        ramp=0.2,
        node_prefix=f"smoke-{mode}",
    )
    with Fleet(spec) as fleet:
        status = fleet.wait_synced(60)
        assert status["synced"] == PROXIES, status
        assert status["failed"] == 0
        for proxy in fleet.results():
            types = proxy["types"]
            for short in ("cds", "eds", "lds", "rds"):
                first_ack, _, responses, size, _ = types[short]
                assert first_ack > 0 and responses >= 1 and size > 0, (proxy["node"], short)
            assert types["cds"][4] == WORKLOAD.services
            assert types["eds"][4] >= WORKLOAD.services
            assert types["lds"][4] == 1
        fleet.record(True)
        change = Change("eds", service_name(0), _flap(server))
        result = fleet.wait_change(change, 30)
        assert result.missing == 0
        assert len(result.acked) == PROXIES
        totals = fleet.totals()
        assert set(totals) == {"eds"}  # only the changed endpoints travel
        assert all(row[4] == 1 for row in totals["eds"])  # one ClusterLoadAssignment each


MESH_SERVICES = 6


def _mesh_snapshots(leaves: dict[str, Any], root: Any, previous: dict[str, Snapshot]) -> Any:
    """The mesh scenario's config for ``MESH_SERVICES`` services, one group per service."""
    from bench.scenarios.mesh import config_of, inventory_of
    from xds_server.model.workload import Identities

    identities = Identities(MappingProxyType(dict(leaves)), (root.trust_anchor,))
    translation = translate(inventory_of(MESH_SERVICES), config_of(MESH_SERVICES, 60), identities)
    return {
        name: Snapshot.build(resources.messages(), previous=previous.get(name))
        for name, resources in translation.groups.items()
    }


def test_simulated_sidecars_follow_sds_and_see_only_the_renewed_secret() -> None:
    """The mesh scenario's sidecars: each gets its listeners, clusters and both secrets;
    a renewal sends each the new identity and nothing else."""
    from bench.scenarios.mesh import TRUST_DOMAIN, group_of
    from bench.simulator.sidecar import SidecarFleet
    from xds_server.mesh.ca import generate_root, issue_leaf

    now = datetime.now(UTC)
    root = generate_root(TRUST_DOMAIN, now)
    names = [service_name(i) for i in range(MESH_SERVICES)]

    def issue() -> dict[str, Any]:
        return {s: issue_leaf(root, TRUST_DOMAIN, s, now, timedelta(minutes=1)) for s in names}

    xds = ThreadedXds().start()
    try:
        groups = _mesh_snapshots(issue(), root, {})
        xds.call(xds.cache.set_snapshots, EMPTY_SNAPSHOT, groups)
        spec = FleetSpec(
            f"127.0.0.1:{xds.port}", MESH_SERVICES, workers=1, ramp=0.2, node_prefix="smoke"
        )
        with SidecarFleet(spec, group_of) as fleet:
            status = fleet.wait_identity(1, 60)
            assert status == {"mesh_synced": MESH_SERVICES, "at_least": MESH_SERVICES, "failed": 0}
            for proxy in fleet.results():
                service = group_of(proxy["index"])
                assert proxy["secrets"] == [f"mesh/identity/{service}", "mesh/trust-bundle"]
                assert proxy["listeners"] >= 2  # inbound and at least one outbound
            fleet.record(True)
            xds.call(
                xds.cache.set_snapshots, EMPTY_SNAPSHOT, _mesh_snapshots(issue(), root, groups)
            )
            status = fleet.wait_identity(2, 30)
            assert status["at_least"] == MESH_SERVICES
            totals = fleet.totals()
            fleet.record(False)
        assert set(totals) == {"sds"}  # a renewal re-sends no listener or cluster
        assert all(row[3] == 1 for row in totals["sds"])  # the identity only, not the bundle
    finally:
        xds.stop()
