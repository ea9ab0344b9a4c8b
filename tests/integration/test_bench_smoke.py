"""The benchmark simulator still works: ~20 simulated Envoys against an in-process server.

No timing is asserted (benchmarks print figures; tests do not judge them): every simulated
proxy must follow CDS → EDS and LDS → RDS, ACK everything, and see a pushed change.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

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
