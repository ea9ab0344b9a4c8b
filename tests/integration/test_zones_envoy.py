"""Zone-aware routing through a real Envoy: Consul (the test double) with instances in two
zones of the local datacenter and one in another datacenter; the server started as an
operator does; Envoy bootstrapped with ``xds-server bootstrap --zone a``.

A proxy in zone ``a`` sends its traffic to zone ``a``; when zone ``a``'s instances go
critical it moves to zone ``b``, then to the other datacenter, and back when they recover.
Switch-over times are measured and printed, not asserted (``wait_for`` bounds them
generously); what is asserted is where the requests went.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.consul_double import ConsulDouble
from tests.integration.config_strategies import inventories
from tests.integration.envoy_static import envoy_validate, static_bootstrap
from tests.integration.test_translate_envoy_validate import config_of
from tests.support import seed
from tests.support.envoy import Envoy, free_port, http_get, running_envoy, wait_for
from tests.support.process import ServerProcess
from tests.support.upstream import upstreams
from xds_server.cache.zones import zonal_assignment
from xds_server.cli.bootstrap import HostPort, bootstrap
from xds_server.model import Inventory
from xds_server.translate import translate

pytestmark = pytest.mark.envoy


@dataclass(frozen=True)
class Where:
    """An instance's datacenter and how it names its zone to Consul."""

    dc: str = "dc1"
    locality: dict[str, str] | None = None
    meta: dict[str, str] | None = None
    node_meta: dict[str, str] | None = None


#: Zone ``a`` is named by Consul 1.17's ``Service.Locality``, zone ``b`` by ``Service.Meta``
#: and by ``Node.Meta``.
INSTANCES = {
    "a-1": Where(locality={"Region": "dc1", "Zone": "a"}),
    "a-2": Where(locality={"Zone": "a"}),
    "b-1": Where(meta={"zone": "b"}),
    "b-2": Where(node_meta={"zone": "b"}),
    "remote-1": Where(dc="dc2", locality={"Zone": "a"}),  # zone a, but another datacenter
}
ZONE_A = {"a-1", "a-2"}
ZONE_B = {"b-1", "b-2"}


@dataclass
class Stack:
    consul: ConsulDouble
    server: ServerProcess
    port: int


def _zoned_bootstrap(
    ads_port: int, node_id: str, zone: str, *, delta: bool = False
) -> dict[str, Any]:
    """What ``xds-server bootstrap --node-id … --group default --zone … [--delta]`` prints."""
    return bootstrap(
        node_id,
        "default",
        ads=HostPort("127.0.0.1", ads_port),
        delta=delta,
        admin=HostPort("127.0.0.1", 0),
        zone=zone,
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    seed.seed_store(
        tmp_path / "store.db", [seed.listener("public", port), seed.route("web", "public", "web")]
    )
    with (
        ConsulDouble(datacenters=("dc1", "dc2"), local_dc="dc1") as consul,
        upstreams(*INSTANCES) as backends,
    ):
        for backend in backends:
            where = INSTANCES[backend.name]
            consul.register(
                "web",
                "127.0.0.1",
                backend.port,
                id=backend.name,
                node=backend.name,
                dc=where.dc,
                locality=where.locality,
                meta=where.meta,
                node_meta=where.node_meta,
            )
        server = ServerProcess.local(
            tmp_path / "store.db",
            "consul",
            "--log-format",
            "text",
            env={
                "CONSUL_HTTP_ADDR": f"127.0.0.1:{consul.port}",
                "XDS_SERVER_CONSUL_DATACENTERS": "dc1,dc2",
            },
        ).start()
        try:
            yield Stack(consul, server, port)
        finally:
            server.kill()


def _spread(port: int, count: int) -> Counter[str]:
    """Which instance answered each of ``count`` requests (``!<status>`` for a failure)."""
    answers: Counter[str] = Counter()
    for _ in range(count):
        status, body, _ = http_get(port)
        answers[body if status == 200 else f"!{status}"] += 1
    return answers


def _in(answers: Counter[str], names: set[str]) -> int:
    return sum(n for name, n in answers.items() if name in names)


def _switch(what: str, probe: Callable[[], bool], envoy: Envoy) -> float:
    started = time.monotonic()
    wait_for(probe, 15, what, envoy.check_alive)
    delay = time.monotonic() - started
    print(f"{what}: {delay * 1000:.0f} ms")
    return delay


def _answered_by(port: int, names: set[str]) -> Callable[[], bool]:
    def probe() -> bool:
        status, body, _ = http_get(port)
        return status == 200 and body in names

    return probe


def _set(consul: ConsulDouble, names: set[str], status: str) -> None:
    for name in sorted(names):
        consul.set_check(name, status, dc=INSTANCES[name].dc)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_proxy_prefers_its_zone_and_fails_over_by_priority(stack: Stack, delta: bool) -> None:
    config = _zoned_bootstrap(stack.server.ads_port, "edge-a", "a", delta=delta)
    assert config["node"]["locality"] == {"zone": "a"}
    with running_envoy(config) as envoy:
        wait_for(_answered_by(stack.port, ZONE_A), 30, "traffic to zone a", envoy.check_alive)
        answers = _spread(stack.port, 500)
        print(f"zone a proxy, all healthy: {dict(answers)}")
        assert _in(answers, ZONE_A) >= 495  # >= 99 %
        assert _in(answers, ZONE_A) + _in(answers, ZONE_B | {"remote-1"}) == 500

        _set(stack.consul, ZONE_A, "critical")
        _switch("zone a critical -> traffic in zone b", _answered_by(stack.port, ZONE_B), envoy)
        answers = _spread(stack.port, 100)
        print(f"zone a critical: {dict(answers)}")
        assert _in(answers, ZONE_B) == 100  # not zone a, not the other datacenter yet

        _set(stack.consul, ZONE_B, "critical")
        _switch(
            "zones a and b critical -> traffic in dc2",
            _answered_by(stack.port, {"remote-1"}),
            envoy,
        )
        assert _spread(stack.port, 50) == Counter({"remote-1": 50})

        _set(stack.consul, ZONE_A | ZONE_B, "passing")
        _switch("zone a passing -> traffic back in zone a", _answered_by(stack.port, ZONE_A), envoy)
        answers = _spread(stack.port, 200)
        print(f"zone a healthy again: {dict(answers)}")
        assert _in(answers, ZONE_A) >= 198


def test_a_proxy_without_a_zone_spreads_over_the_local_datacenter(stack: Stack) -> None:
    config = _zoned_bootstrap(stack.server.ads_port, "edge-none", "")
    assert "locality" not in config["node"]
    with running_envoy(config) as envoy:
        wait_for(
            lambda: http_get(stack.port)[0] == 200, 30, "traffic through Envoy", envoy.check_alive
        )
        answers = _spread(stack.port, 200)
        print(f"proxy without a zone: {dict(answers)}")
        # The local datacenter is one priority: both zones serve; dc2 only as a fallback.
        assert _in(answers, ZONE_A) >= 50 and _in(answers, ZONE_B) >= 50
        assert answers["remote-1"] == 0


@settings(
    max_examples=int(os.environ.get("XDS_TEST_ENVOY_EXAMPLES", "40")) // 2,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(inventory=inventories(), zone=st.sampled_from(["a", "b", "eu"]))
def test_every_zonal_view_is_accepted_by_envoy(inventory: Inventory, zone: str) -> None:
    """The hypothesis generator's inventories (zones, regions, priorities 0-3), each
    assignment re-prioritised for a proxy in ``zone``: Envoy accepts them all."""
    raws = [seed.listener("l", 10000)]
    raws += [
        seed.route(f"r{i}", "l", service, hostname=f"r{i}.local")
        for i, service in enumerate(sorted(inventory.services))
    ]
    translation = translate(inventory, config_of(raws))
    bundles = [
        dataclasses.replace(
            bundle, endpoints=tuple(zonal_assignment(m, zone) for m in bundle.endpoints)
        )
        for bundle in (translation.default, *translation.groups.values())
    ]
    with tempfile.TemporaryDirectory() as directory:
        result = envoy_validate(static_bootstrap(bundles), Path(directory))
    assert result.returncode == 0, f"{inventory}\n{result.stdout}\n{result.stderr}"
