"""The Consul watcher: settings, pacing, and behaviour against the Consul test double."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.consul_double import ConsulDouble
from xds_server.consul import Backoff, ConsulHttpError, TokenBucket, go_duration, parse_address
from xds_server.model.inventory import Health, Inventory
from xds_server.sources.base import InventorySource, SourceStatus
from xds_server.sources.consul import ConsulWatcher
from xds_server.sources.consul_api import ConsulApi
from xds_server.sources.consul_settings import WatcherSettings

# --- settings ----------------------------------------------------------------------------------


def test_settings_defaults_without_environment() -> None:
    s = WatcherSettings.from_env({})
    assert (s.consul.scheme, s.consul.host, s.consul.port, s.consul.token) == (
        "http",
        "127.0.0.1",
        8500,
        None,
    )
    assert s.max_concurrent_queries == 64
    assert s.burst == 2
    assert s.datacenters == ()


def test_settings_from_consul_environment_variables(tmp_path) -> None:
    env = {
        "CONSUL_HTTP_ADDR": "consul.internal:8501",
        "CONSUL_HTTP_TOKEN": "secret",
        "CONSUL_CACERT": "/ca.pem",
        "CONSUL_CLIENT_CERT": "/c.pem",
        "CONSUL_CLIENT_KEY": "/k.pem",
        "CONSUL_HTTP_SSL": "true",
    }
    s = WatcherSettings.from_env(env)
    assert (s.consul.scheme, s.consul.host, s.consul.port) == ("https", "consul.internal", 8501)
    assert (s.consul.token, s.consul.ca_file, s.consul.cert_file, s.consul.key_file) == (
        "secret",
        "/ca.pem",
        "/c.pem",
        "/k.pem",
    )
    assert "secret" not in s.describe()

    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    s = WatcherSettings.from_env({"CONSUL_HTTP_TOKEN_FILE": str(token_file)})
    assert s.consul.token == "from-file"


def test_explicit_values_override_the_environment() -> None:
    env = {"CONSUL_HTTP_ADDR": "https://a:1", "CONSUL_HTTP_TOKEN": "env"}
    s = WatcherSettings.from_env(
        env, address="b:2", token="flag", datacenters=["dc1", "dc2"], wait=None
    )
    assert (s.consul.scheme, s.consul.host, s.consul.port, s.consul.token) == (
        "http",
        "b",
        2,
        "flag",
    )
    assert s.datacenters == ("dc1", "dc2")
    assert s.consul.wait == 300.0  # None means "not given"
    with pytest.raises(TypeError):
        WatcherSettings.from_env({}, no_such_setting=1)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8500", (None, "127.0.0.1", 8500)),
        ("localhost", (None, "localhost", 8500)),
        ("http://consul:80", ("http", "consul", 80)),
        ("https://consul", ("https", "consul", 443)),
        ("[::1]:8500", (None, "::1", 8500)),
    ],
)
def test_parse_address(address: str, expected: tuple[str | None, str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["unix:///var/run/consul.sock", "host:notaport", "http://"])
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError):
        parse_address(address)


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_concurrent_queries": 2},  # the two watches would leave no room for reads
        {"max_concurrent_queries": 201},  # above Consul's per-client limit
        {"datacenters": ("a", "b"), "max_concurrent_queries": 4},
        {"wait": 601},
        {"rate": 0},
        {"cert_file": "/c.pem"},
        {"datacenters": ("a", "a")},
    ],
)
def test_invalid_settings(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        WatcherSettings.from_env({}, **overrides)


def test_ssl_env_false_wins_over_an_https_address() -> None:
    env = {"CONSUL_HTTP_ADDR": "https://a:1", "CONSUL_HTTP_SSL": "false"}
    assert WatcherSettings.from_env(env).consul.scheme == "http"


@pytest.mark.parametrize(
    ("seconds", "text"), [(300, "300s"), (0.25, "250ms"), (1.5, "1500ms"), (2, "2s")]
)
def test_wait_as_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


# --- pacing ---------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_bursts_two_then_paces() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=2, clock=clock)
    assert bucket.try_acquire()
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    assert bucket.delay() == pytest.approx(1.0)
    clock.now = 0.5
    assert bucket.delay() == pytest.approx(0.5)
    clock.now = 1.0
    assert bucket.try_acquire()
    clock.now = 100.0  # a long quiet period refills only up to the burst
    assert bucket.try_acquire() and bucket.try_acquire() and not bucket.try_acquire()


async def test_token_bucket_acquire_waits_only_when_empty() -> None:
    loop = asyncio.get_running_loop()
    bucket = TokenBucket(rate=20.0, burst=2)
    start = loop.time()
    await bucket.acquire()
    await bucket.acquire()
    assert loop.time() - start < 0.04  # the burst passes at once
    await bucket.acquire()
    await bucket.acquire()
    assert loop.time() - start >= 0.09  # then 20 per second: two more take ~0.1 s


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    low = Backoff(1.0, 8.0, rng=lambda: 0.0)
    assert [low.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    high = Backoff(1.0, 8.0, rng=lambda: 0.999)
    delays = [high.next_delay() for _ in range(6)]
    assert delays[0] == pytest.approx(0.9995) and delays[-1] == pytest.approx(7.996)
    high.reset()
    assert high.next_delay() < 1.0


# --- blocking-query rules, on a scripted API ----------------------------------------------------


class ScriptedApi(ConsulApi):
    """Answers /v1/catalog/services from a script (then blocks); checks and nodes block; the
    census finds no checks."""

    def __init__(self, settings: WatcherSettings, answers: list[tuple[int, dict[str, list[str]]]]):
        super().__init__(settings)
        self.answers = collections.deque(answers)
        self.catalog_calls: list[tuple[float, int]] = []
        self.enough = asyncio.Event()
        self.wanted_calls = len(answers) + 1  # every answer, then the call that blocks

    async def __aenter__(self) -> ScriptedApi:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def catalog_services(self, dc: str | None, index: int = 0):  # type: ignore[override]
        self.catalog_calls.append((asyncio.get_running_loop().time(), index))
        if len(self.catalog_calls) >= self.wanted_calls:
            self.enough.set()
        if not self.answers:
            await asyncio.Event().wait()
        return self.answers.popleft()

    async def checks_not_passing(self, dc: str | None, index: int = 0):  # type: ignore[override]
        if index:
            await asyncio.Event().wait()
        return 1, []

    async def health_state(self, dc: str | None):  # type: ignore[override]
        return 1, []  # the census: no checks at all

    async def catalog_nodes(self, dc: str | None, index: int = 0):  # type: ignore[override]
        if index:
            await asyncio.Event().wait()
        return 1, []

    async def health_service(self, name: str, dc: str | None):  # type: ignore[override]
        entry = {"Node": {"Node": "n", "Address": "10.0.0.1"}, "Service": {"ID": name, "Port": 80}}
        return 1, [entry]


async def _run_scripted(
    answers: list[tuple[int, dict[str, list[str]]]], **overrides: Any
) -> tuple[ScriptedApi, ConsulWatcher, list[Inventory]]:
    settings = WatcherSettings.from_env({}, resync_interval=0, **overrides)
    api = ScriptedApi(settings, answers)
    watcher = ConsulWatcher(settings, api_factory=lambda _: api)
    published: list[Inventory] = []
    task = asyncio.create_task(watcher.run(published.append))
    try:
        await asyncio.wait_for(api.enough.wait(), WAIT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return api, watcher, published


async def test_an_index_of_zero_is_used_as_one_and_the_loop_is_rate_limited() -> None:
    answers: list[tuple[int, dict[str, list[str]]]] = [
        (0, {"web": []})
    ] * 8  # a Consul bug: X-Consul-Index 0 on every answer
    api, _, published = await _run_scripted(answers, rate=20.0, burst=2)
    indexes = [index for _, index in api.catalog_calls]
    assert indexes == [0, 1, 1, 1, 1, 1, 1, 1, 1]  # blocks on 1 instead of spinning on 0
    times = [t for t, _ in api.catalog_calls]
    # Two at once (the burst), then 20 per second: the ninth call comes >= 6/20 s later.
    assert times[8] - times[0] >= 6 / 20 - 0.01
    assert len(published) == 1


async def test_an_index_going_backwards_restarts_from_zero_with_a_full_resync() -> None:
    catalog: dict[str, list[str]] = {"web": [], "api": []}
    answers = [(10, catalog), (12, catalog), (5, catalog), (7, catalog)]
    api, watcher, _ = await _run_scripted(answers, rate=50.0)
    assert [index for _, index in api.catalog_calls] == [0, 10, 12, 0, 7]
    # The first read, the unexplained move 10 → 12 (no check changed), and after the reset.
    assert watcher.full_resyncs == 3


# --- against the Consul double --------------------------------------------------------------------

pytest_plugins = ["tests.consul_double.fixtures"]


def test_watcher_satisfies_the_protocol() -> None:
    assert isinstance(ConsulWatcher(WatcherSettings()), InventorySource)


WAIT = 10.0  # deadline for anything that should take well under a second
LOGGER = "xds_server.sources.consul"


def _settings(double: ConsulDouble, **overrides: Any) -> WatcherSettings:
    """Test settings: short blocking waits and back-off; rate 5/s so that the back-to-back
    changes of a test are not paced (production default: 1/s, see docs/consul.md)."""
    values: dict[str, Any] = {
        "address": double.url,
        "wait": 5.0,
        "request_timeout": 2.0,
        "rate": 5.0,
        "backoff_base": 0.05,
        "backoff_max": 0.5,
        "resync_interval": 0,
    }
    values.update(overrides)
    return WatcherSettings.from_env({}, **values)


class Watch:
    """A running watcher and what it published."""

    def __init__(self, watcher: ConsulWatcher) -> None:
        self.watcher = watcher
        self.published: asyncio.Queue[Inventory] = asyncio.Queue()
        self.last: Inventory | None = None

    def publish(self, inventory: Inventory) -> None:
        self.published.put_nowait(inventory)

    async def next(self, timeout: float = WAIT) -> Inventory:
        self.last = await asyncio.wait_for(self.published.get(), timeout)
        return self.last

    async def until(
        self, predicate: Callable[[Inventory], bool], timeout: float = WAIT
    ) -> tuple[Inventory, float]:
        """The first published inventory satisfying predicate, and how long it took."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + timeout
        while True:
            inventory = await self.next(max(deadline - loop.time(), 0.001))
            if predicate(inventory):
                return inventory, loop.time() - start

    async def status_until(self, predicate: Callable[[SourceStatus], bool]) -> SourceStatus:
        """Poll the status (it has no event to await) until predicate holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not predicate(self.watcher.status):
            assert loop.time() < deadline, f"status never matched: {self.watcher.status}"
            await asyncio.sleep(0.01)
        return self.watcher.status


@contextlib.asynccontextmanager
async def watching(settings: WatcherSettings) -> AsyncIterator[Watch]:
    watcher = ConsulWatcher(settings)
    watch = Watch(watcher)
    task = asyncio.create_task(watcher.run(watch.publish))
    try:
        yield watch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
        assert watcher.api is None  # the session was closed


def _endpoints(inventory: Inventory, name: str) -> list[tuple[str, int, Health]]:
    service = inventory.get(name)
    assert service is not None, f"{name} missing from {sorted(inventory.services)}"
    return [(e.address, e.port, e.health) for e in service.endpoints]


def _error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= 40]


async def test_initial_sync_maps_the_catalog(consul_double: ConsulDouble) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080, tags=["v1"], meta={"team": "a"}, weights={"Passing": 5})
    d.register("web", "10.0.0.2", 8080, node="node2", status="warning", weights={"Passing": 5})
    d.register("db", "10.0.0.3", 5432, status="critical")
    async with watching(_settings(d)) as w:
        assert not w.watcher.status.ready
        inventory = await w.next()
        assert inventory.synced
        assert w.watcher.status.ready and w.watcher.status.last_error is None
        assert sorted(inventory.services) == ["db", "web"]  # `consul` itself is skipped
        assert _endpoints(inventory, "web") == [
            ("10.0.0.1", 8080, Health.HEALTHY),
            ("10.0.0.2", 8080, Health.DEGRADED),
        ]
        assert _endpoints(inventory, "db") == [("10.0.0.3", 5432, Health.UNHEALTHY)]
        first = inventory.services["web"].endpoints[0]
        assert (first.weight, first.region, first.priority) == (5, "dc1", 0)
        assert first.metadata["consul"] == {
            "tags": ["v1"],
            "meta": {"team": "a"},
            "node_meta": {},
            "node": "node1",
            "instance_id": "web-10.0.0.1-8080",
            "datacenter": "dc1",
        }
        assert w.published.empty()


async def test_empty_catalog_is_published_once_as_synced(consul_double: ConsulDouble) -> None:
    async with watching(_settings(consul_double)) as w:
        inventory = await w.next()
        assert inventory == Inventory.of({}, synced=True)
        assert w.watcher.status.ready


async def test_register_check_and_deregister_arrive_within_a_second(
    consul_double: ConsulDouble,
) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080)
    async with watching(_settings(d)) as w:
        await w.next()
        delays = {}

        d.register("web", "10.0.0.2", 8080, node="node2")
        _, delays["new instance"] = await w.until(lambda i: len(i.services["web"].endpoints) == 2)

        d.set_check("web-10.0.0.2-8080", "critical")
        inv, delays["check critical"] = await w.until(
            lambda i: Health.UNHEALTHY in {e.health for e in i.services["web"].endpoints}
        )
        assert _endpoints(inv, "web")[0][2] is Health.HEALTHY

        d.set_check("web-10.0.0.2-8080", "warning")
        _, delays["check warning"] = await w.until(
            lambda i: Health.DEGRADED in {e.health for e in i.services["web"].endpoints}
        )

        d.register("api", "10.0.0.9", 9000)
        _, delays["new service"] = await w.until(lambda i: "api" in i.services)

        d.deregister("web-10.0.0.2-8080")
        _, delays["deregister"] = await w.until(lambda i: len(i.services["web"].endpoints) == 1)

        d.deregister("api-10.0.0.9-9000")
        _, delays["service gone"] = await w.until(lambda i: "api" not in i.services)

        print("change → published:", {k: f"{v * 1000:.0f}ms" for k, v in delays.items()})
        assert max(delays.values()) < 1.0


async def test_node_check_and_maintenance_reach_every_instance_on_the_node(
    consul_double: ConsulDouble,
) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080, node="n1")
    d.register("api", "10.0.0.1", 9000, node="n1")
    d.register("api", "10.0.0.2", 9000, node="n2")
    async with watching(_settings(d)) as w:
        await w.next()
        d.set_node_health("n1", "critical")
        inv, delay = await w.until(
            lambda i: (
                _endpoints(i, "web")[0][2] is Health.UNHEALTHY
                and _endpoints(i, "api")[0][2] is Health.UNHEALTHY
            )
        )
        print(f"node check → every service on the node: {delay * 1000:.0f}ms")
        assert _endpoints(inv, "api")[1][2] is Health.HEALTHY
        d.set_node_health("n1", "passing")
        await w.until(lambda i: _endpoints(i, "web")[0][2] is Health.HEALTHY)
        d.set_maintenance("api-10.0.0.2-9000", True)
        await w.until(lambda i: _endpoints(i, "api")[1][2] is Health.UNHEALTHY)


async def test_changes_no_check_explains_still_arrive(consul_double: ConsulDouble) -> None:
    """An address change moves only the catalog; an instance without checks too: both are
    unexplained by the checks watch and cost a re-read of every service."""
    d = consul_double
    d.register("web", "10.0.0.1", 8080, id="web-1")
    d.register("other", "10.0.0.5", 80)
    async with watching(_settings(d)) as w:
        await w.next()
        resyncs = w.watcher.full_resyncs
        d.register("web", "10.0.0.7", 8080, id="web-1")  # same instance, new address
        _, moved = await w.until(lambda i: _endpoints(i, "web")[0][0] == "10.0.0.7")
        d.register("web", "10.0.0.8", 8080, id="web-2", node="n2", status=None)
        _, added = await w.until(lambda i: len(i.services["web"].endpoints) == 2)
        print(
            f"address change: {moved * 1000:.0f}ms, instance without checks: {added * 1000:.0f}ms"
        )
        assert w.watcher.full_resyncs >= resyncs + 2
        assert max(moved, added) < 1.0


async def test_node_address_change_reaches_services_using_it(consul_double: ConsulDouble) -> None:
    d = consul_double
    d.register("web", "", 8080, id="web-1", node="n1", node_address="10.0.0.1")
    async with watching(_settings(d)) as w:
        assert _endpoints(await w.next(), "web") == [("10.0.0.1", 8080, Health.HEALTHY)]
        d.register("web", "", 8080, id="web-1", node="n1", node_address="10.0.0.99")
        _, delay = await w.until(lambda i: _endpoints(i, "web")[0][0] == "10.0.0.99")
        print(f"node address change: {delay * 1000:.0f}ms")


async def test_nothing_is_published_when_nothing_changed(consul_double: ConsulDouble) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080)
    async with watching(_settings(d)) as w:
        first = await w.next()
        reads = w.watcher.service_reads
        d.set_check("web-10.0.0.1-8080", "passing", output="still fine")  # index moves
        d.kv_put("unrelated", "x")
        w.watcher.resync()  # re-reads everything: equal data
        await d.wait_for_async(lambda: True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while w.watcher.service_reads < reads + 1:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        d.register("web", "10.0.0.2", 8080, node="n2")
        second = await w.next()  # the first publication after those is the real change
        assert len(second.services["web"].endpoints) == 2
        assert second != first


async def test_500s_keep_the_last_inventory_and_recover(
    consul_double: ConsulDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    d = consul_double
    d.register("web", "10.0.0.1", 8080)
    async with watching(_settings(d)) as w:
        good = await w.next()
        d.fail(500)
        d.register("web", "10.0.0.2", 8080, node="n2")  # wakes the watches into the failure
        status = await w.status_until(lambda s: s.last_error is not None)
        assert "500" in (status.last_error or "")
        errors_during = await w.status_until(lambda s: s.errors >= 3)
        assert w.published.empty()
        assert w.watcher.status.ready
        d.heal()
        inv, delay = await w.until(lambda i: len(i.services["web"].endpoints) == 2)
        print(f"500s: recovered and published {delay * 1000:.0f}ms after heal")
        assert inv.services["web"].endpoints[0] == good.services["web"].endpoints[0]
        await w.status_until(lambda s: s.last_error is None)
        assert errors_during.errors >= 3
        assert len(_error_lines(caplog)) == 1, _error_lines(caplog)
        recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
        assert len(recovered) == 1
        # The next change after recovery arrives as usual.
        d.set_check("web-10.0.0.1-8080", "critical")
        await w.until(lambda i: _endpoints(i, "web")[0][2] is Health.UNHEALTHY, timeout=1.0)


async def test_a_failing_service_read_is_not_an_empty_service(
    consul_double: ConsulDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    d = consul_double
    d.register("web", "10.0.0.1", 8080)
    d.register("api", "10.0.0.2", 9000)
    async with watching(_settings(d)) as w:
        await w.next()
        d.fail(500, path_prefix="/v1/health/service/web")
        d.set_check("web-10.0.0.1-8080", "critical")
        await w.status_until(lambda s: s.errors >= 3)  # retried, with back-off
        # Other services keep flowing meanwhile, and web keeps its last good endpoints.
        d.register("api", "10.0.0.3", 9000, node="n2")
        inv, _ = await w.until(lambda i: len(i.services["api"].endpoints) == 2)
        assert _endpoints(inv, "web") == [("10.0.0.1", 8080, Health.HEALTHY)]
        assert w.watcher.status.last_error is not None
        d.heal()
        await w.until(lambda i: _endpoints(i, "web")[0][2] is Health.UNHEALTHY)
        await w.status_until(lambda s: s.last_error is None)
    assert len(_error_lines(caplog)) == 1, _error_lines(caplog)
    assert len([r for r in caplog.records if "recovered" in r.getMessage()]) == 1


async def test_hanging_consul_times_out_then_recovers(consul_double: ConsulDouble) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080)
    async with watching(_settings(d, wait=0.5, request_timeout=0.5)) as w:
        await w.next()
        d.hang()
        status = await w.status_until(lambda s: s.last_error is not None)
        assert "did not answer" in (status.last_error or "")
        d.register("web", "10.0.0.2", 8080, node="n2")
        assert w.published.empty()
        d.heal()
        _, delay = await w.until(lambda i: len(i.services["web"].endpoints) == 2)
        print(f"hang: published {delay * 1000:.0f}ms after heal")
        await w.status_until(lambda s: s.last_error is None)


async def test_refused_connections_then_reconnect_with_a_full_resync(
    consul_double: ConsulDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    d = consul_double
    d.register("web", "10.0.0.1", 8080)
    d.register("api", "10.0.0.5", 9000)
    async with watching(_settings(d)) as w:
        await w.next()
        resyncs = w.watcher.full_resyncs
        d.refuse_connections()
        status = await w.status_until(lambda s: s.last_error is not None)
        assert "cannot reach Consul" in (status.last_error or "")
        await w.status_until(lambda s: s.errors >= 6)  # it keeps retrying, quietly
        d.register("web", "10.0.0.2", 8080, node="n2")
        d.deregister("api-10.0.0.5-9000")
        assert w.published.empty()
        d.heal()
        _, delay = await w.until(
            lambda i: "api" not in i.services and len(i.services["web"].endpoints) == 2
        )
        print(f"refused: published {delay * 1000:.0f}ms after the agent came back")
        assert w.watcher.full_resyncs > resyncs
        await w.status_until(lambda s: s.last_error is None)
        assert len(_error_lines(caplog)) == 1, _error_lines(caplog)
        d.set_check("web-10.0.0.1-8080", "critical")
        await w.until(lambda i: _endpoints(i, "web")[0][2] is Health.UNHEALTHY, timeout=1.0)


async def test_index_reset_starts_over_without_hot_looping(consul_double: ConsulDouble) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080)
    async with watching(_settings(d)) as w:
        await w.next()
        resyncs = w.watcher.full_resyncs
        d.reset_stats()
        d.reset_index(1)
        await d.wait_for_requests_async("/v1/catalog/services", 2)
        d.register("web", "10.0.0.2", 8080, node="n2")
        _, delay = await w.until(lambda i: len(i.services["web"].endpoints) == 2)
        print(f"index reset: next change published after {delay * 1000:.0f}ms")
        assert w.watcher.full_resyncs > resyncs
        # Blocking again, not polling: a handful of catalog requests, not hundreds.
        assert d.request_count("/v1/catalog/services") < 20


async def test_acl_token_is_sent_on_every_request(
    consul_double_factory: Callable[..., ConsulDouble], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = consul_double_factory(acl_token="s3cret")
    d.register("web", "10.0.0.1", 8080)
    # py-consul would prefer this over the token it is given; ours must win.
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-the-environment")
    async with watching(_settings(d, token="s3cret")) as w:
        inventory = await w.next()
        assert "web" in inventory.services
    assert set(d.tokens_seen) == {"s3cret"}


async def test_wrong_acl_token_is_one_clear_error_and_not_ready(
    consul_double_factory: Callable[..., ConsulDouble], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    d = consul_double_factory(acl_token="s3cret")
    d.register("web", "10.0.0.1", 8080)
    async with watching(_settings(d, token="wrong")) as w:
        status = await w.status_until(lambda s: s.errors >= 6)
        assert not status.ready
        assert (status.last_error or "").startswith(
            "Consul ACL: permission denied — check CONSUL_HTTP_TOKEN"
        )
        assert w.published.empty()
    lines = _error_lines(caplog)
    assert len(lines) == 1, lines
    assert "Consul ACL: permission denied — check CONSUL_HTTP_TOKEN" in lines[0]
    assert "wrong" not in lines[0]


async def test_several_datacenters_local_first(
    consul_double_factory: Callable[..., ConsulDouble],
) -> None:
    d = consul_double_factory(datacenters=("dc1", "dc2"), local_dc="dc1")
    d.register("web", "10.1.0.1", 8080, dc="dc1")
    d.register("web", "10.2.0.1", 8080, dc="dc2")
    d.register("only-remote", "10.2.0.2", 80, dc="dc2")
    async with watching(_settings(d, datacenters=("dc1", "dc2"))) as w:
        inventory = await w.next()
        web = inventory.services["web"].endpoints
        assert [(e.address, e.region, e.priority) for e in web] == [
            ("10.1.0.1", "dc1", 0),
            ("10.2.0.1", "dc2", 1),
        ]
        assert [e.priority for e in inventory.services["only-remote"].endpoints] == [1]
        d.set_check("web-10.2.0.1-8080", "critical", dc="dc2")
        inv, delay = await w.until(
            lambda i: i.services["web"].endpoints[1].health is Health.UNHEALTHY
        )
        print(f"remote datacenter change: {delay * 1000:.0f}ms")
        assert inv.services["web"].endpoints[0].health is Health.HEALTHY
        d.deregister("web-10.1.0.1-8080", dc="dc1")
        inv, _ = await w.until(lambda i: len(i.services["web"].endpoints) == 1)
        assert inv.services["web"].endpoints[0].region == "dc2"


async def test_service_filters(consul_double: ConsulDouble) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080, tags=["public"])
    d.register("web-admin", "10.0.0.2", 8080, tags=["internal"])
    d.register("api", "10.0.0.3", 8080, tags=["public"])
    async with watching(_settings(d, include=("web*",), exclude_tags=("internal",))) as w:
        inventory = await w.next()
        assert sorted(inventory.services) == ["web"]
        d.register("web-2", "10.0.0.4", 8080)
        await w.until(lambda i: "web-2" in i.services)


async def test_tls_with_a_private_ca_and_a_client_certificate(
    consul_double_factory: Callable[..., ConsulDouble], tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS, like verify_incoming
    d = consul_double_factory(ssl_context=server_ctx)
    d.register("web", "10.0.0.1", 8080)
    assert d.url.startswith("https://")

    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("xds-server")
    client.cert_chain_pems[0].write_to_path(str(cert_file))
    client.private_key_pem.write_to_path(str(key_file))
    env = {
        "CONSUL_HTTP_ADDR": d.url,
        "CONSUL_CACERT": str(ca_file),
        "CONSUL_CLIENT_CERT": str(cert_file),
        "CONSUL_CLIENT_KEY": str(key_file),
    }
    settings = WatcherSettings.from_env(env, wait=5.0, resync_interval=0)
    assert settings.consul.scheme == "https"
    async with watching(settings) as w:
        assert "web" in (await w.next()).services

    # Without trusting the CA: a clear TLS error, not ready, no crash.
    untrusted = WatcherSettings.from_env(
        {"CONSUL_HTTP_ADDR": d.url}, wait=5.0, backoff_base=0.05, backoff_max=0.2
    )
    async with watching(untrusted) as w:
        status = await w.status_until(lambda s: s.last_error is not None)
        assert not status.ready
        assert "TLS" in (status.last_error or "") or "certificate" in (status.last_error or "")


async def test_concurrency_stays_within_the_bound(consul_double: ConsulDouble) -> None:
    d = consul_double
    d.seed(300, 2)
    bound = 8
    d.reset_stats()
    async with watching(_settings(d, max_concurrent_queries=bound)) as w:
        inventory = await w.next()
        assert len(inventory.services) == 300
        w.watcher.resync()
        await w.status_until(lambda s: w.watcher.service_reads >= 600)
        api = w.watcher.api
        assert api is not None and api.max_in_flight <= bound
    print(f"bound {bound}: max connections {d.max_connections}, max in flight {d.max_inflight}")
    assert d.max_connections <= bound
    assert d.max_inflight <= bound


async def test_cancellation_closes_everything_promptly(consul_double: ConsulDouble) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080)
    watcher = ConsulWatcher(_settings(d, wait=300.0))
    queue: asyncio.Queue[Inventory] = asyncio.Queue()
    task = asyncio.create_task(watcher.run(queue.put_nowait))
    await asyncio.wait_for(queue.get(), WAIT)
    await d.wait_for_blocked_async("/v1/", 3)  # catalog, checks, nodes: parked
    loop = asyncio.get_running_loop()
    start = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert loop.time() - start < 1.0
    await d.wait_for_async(lambda: d.connections == 0)


def _node_address(d: ConsulDouble, node: str) -> str:
    for name in d.services():
        for entry in d.health(name):
            if entry["Node"]["Node"] == node:
                return str(entry["Node"]["Address"])
    raise KeyError(node)


async def test_scale_2000_services_x_5_instances(consul_double: ConsulDouble) -> None:
    """The measurement of docs/consul.md, with production settings except the wait."""
    d = consul_double
    loop = asyncio.get_running_loop()
    start = loop.time()
    names = d.seed(2000, 5)
    seeded = loop.time() - start
    d.reset_stats()
    settings = WatcherSettings.from_env({}, address=d.url, wait=30.0)
    assert settings.max_concurrent_queries == 64 and settings.rate == 2.0
    async with watching(settings) as w:
        start = loop.time()
        inventory = await w.next(timeout=120)
        full_sync = loop.time() - start
        assert len(inventory.services) == 2000
        assert sum(len(s.endpoints) for s in inventory.services.values()) == 10_000

        target = names[1234]
        d.set_check(f"{target}-3", "critical")
        _, check_delay = await w.until(
            lambda i: Health.UNHEALTHY in {e.health for e in i.services[target].endpoints}
        )
        d.register(target, "10.99.0.1", 30000, node="extra")
        _, register_delay = await w.until(lambda i: len(i.services[target].endpoints) == 6)
        # An address change touches no check: unexplained, so every service is re-read.
        (moved,) = [
            e
            for e in w.last.services[target].endpoints  # type: ignore[union-attr]
            if e.metadata["consul"]["instance_id"] == f"{target}-0"
        ]
        node = moved.metadata["consul"]["node"]
        resyncs = w.watcher.full_resyncs
        d.register(
            target,
            "10.99.0.2",
            moved.port,
            id=f"{target}-0",
            node=node,
            node_address=_node_address(d, node),
        )
        _, unexplained_delay = await w.until(
            lambda i: "10.99.0.2" in {e.address for e in i.services[target].endpoints},
            timeout=60,
        )
        assert w.watcher.full_resyncs == resyncs + 1
        api = w.watcher.api
        assert api is not None
        client_max = api.max_in_flight
    print(
        f"\n2000x5: seed {seeded:.2f}s; full sync {full_sync:.2f}s; "
        f"check flip {check_delay * 1000:.0f}ms; new instance {register_delay * 1000:.0f}ms; "
        f"address change (full re-read) {unexplained_delay * 1000:.0f}ms; "
        f"max connections {d.max_connections}, max in flight {d.max_inflight} "
        f"(client {client_max}), requests {d.request_count()}"
    )
    assert d.max_connections <= settings.max_concurrent_queries
    assert d.max_inflight <= settings.max_concurrent_queries
    assert max(check_delay, register_delay) <= 5.0
    assert unexplained_delay <= 30.0


# --- what a change costs: the failing-checks watch and the census ------------------------------

CHECKS = "/v1/health/state/any"


async def _settled(d: ConsulDouble) -> None:
    """Every watch parked again (so every request a change caused has been answered)."""
    await d.wait_for_async(lambda: d.blocked_count("/v1/") == 3 and d.inflight == 3)


async def _one_check_change(d: ConsulDouble, services: int) -> tuple[int, dict[str, int]]:
    """Seed ``services`` x 3, sync, flip one check: (bytes read, requests by path), with the
    flipped service's path as ``SERVICE``."""
    names = d.seed(services, 3)
    async with watching(_settings(d)) as w:
        await w.next(timeout=60)
        await _settled(d)
        d.reset_stats()
        census = w.watcher.census_reads
        target = names[services // 2]
        d.set_check(f"{target}-1", "critical")
        await w.until(
            lambda i: Health.UNHEALTHY in {e.health for e in i.services[target].endpoints}
        )
        await _settled(d)
        assert w.watcher.census_reads == census  # a check change never takes a census
        by_path = {r.path: d.request_count(r.path) for r in d.requests()}
        by_path["SERVICE"] = by_path.pop(f"/v1/health/service/{target}", 0)
        return d.bytes_sent(), by_path


async def test_a_check_change_reads_the_same_whatever_the_number_of_services(
    consul_double_factory: Callable[..., ConsulDouble],
) -> None:
    """The checks watch asks only for failing checks: one check change reads a few hundred
    bytes of checks and the one service it names, at 20 services as at 600."""
    small = await _one_check_change(consul_double_factory(), 20)
    large = await _one_check_change(consul_double_factory(), 600)
    print(f"\none check change: 20 services {small}, 600 services {large}")
    assert small[1] == large[1] == {CHECKS: 1, "SERVICE": 1}
    assert large[0] == small[0]  # bytes: independent of the catalog's size
    assert large[0] < 4096


async def test_the_checks_watch_filters_on_status(consul_double: ConsulDouble) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080)
    async with watching(_settings(d)) as w:
        await w.next()
        await _settled(d)
    filters = {r.param("filter") for r in d.requests(CHECKS) if r.param("index")}
    assert filters == {'Status != "passing"'}


async def test_a_deleted_check_and_a_deregistered_instance_are_seen_without_a_full_reread(
    consul_double: ConsulDouble,
) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080, id="web-1", node="n1", status="critical")
    d.register("web", "10.0.0.2", 8080, id="web-2", node="n2")
    for i in range(20):
        d.register(f"other-{i}", f"10.0.1.{i}", 80, node=f"n{i % 3}")
    async with watching(_settings(d)) as w:
        inv = await w.next()
        assert {h for *_, h in _endpoints(inv, "web")} == {Health.UNHEALTHY, Health.HEALTHY}
        resyncs = w.watcher.full_resyncs
        # A failing check deleted: it leaves the failing-checks answer, which names web.
        d.deregister_check("service:web-1", node="n1")
        inv, deleted = await w.until(
            lambda i: {h for *_, h in _endpoints(i, "web")} == {Health.HEALTHY}
        )
        # An instance whose checks pass deregistered: no failing check changes, so the
        # census (its check is gone) names web; the 19 others are not re-read.
        await _settled(d)
        reads, census = w.watcher.service_reads, w.watcher.census_reads
        d.deregister("web-2")
        inv, gone = await w.until(lambda i: len(i.services["web"].endpoints) == 1)
        assert _endpoints(inv, "web") == [("10.0.0.1", 8080, Health.HEALTHY)]
        # And one registered with a passing check: its check was written in this round.
        d.register("web", "10.0.0.3", 8080, id="web-3", node="n2")
        _, added = await w.until(lambda i: len(i.services["web"].endpoints) == 2)
        await _settled(d)
        assert w.watcher.full_resyncs == resyncs
        assert w.watcher.census_reads == census + 2
        assert w.watcher.service_reads - reads <= 4  # web twice, plus at most a neighbour
        print(
            f"deleted check {deleted * 1000:.0f}ms, deregistered {gone * 1000:.0f}ms, "
            f"registered {added * 1000:.0f}ms"
        )
        assert max(deleted, gone, added) < 1.0


async def test_a_node_check_deleted_while_failing_reaches_the_node(
    consul_double: ConsulDouble,
) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080, node="n1")
    d.register("api", "10.0.0.1", 9000, node="n1")
    d.set_node_health("n1", "critical")
    async with watching(_settings(d)) as w:
        inv = await w.next()
        assert _endpoints(inv, "api")[0][2] is Health.UNHEALTHY
        d.deregister_check("serfHealth", node="n1")
        await w.until(
            lambda i: (
                _endpoints(i, "api")[0][2] is Health.HEALTHY
                and _endpoints(i, "web")[0][2] is Health.HEALTHY
            )
        )


async def test_an_outage_keeps_the_last_good_endpoints_and_the_change_arrives_after(
    consul_double: ConsulDouble,
) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080, id="web-1", node="n1")
    d.register("web", "10.0.0.2", 8080, id="web-2", node="n2")
    async with watching(_settings(d)) as w:
        good = await w.next()
        d.fail(500)
        d.set_check("web-1", "critical")  # wakes the watches into the failure
        d.deregister("web-2")
        await w.status_until(lambda s: s.errors >= 3)
        assert w.published.empty()  # nothing emptied: the last good endpoints stay served
        assert _endpoints(good, "web") == [
            ("10.0.0.1", 8080, Health.HEALTHY),
            ("10.0.0.2", 8080, Health.HEALTHY),
        ]
        d.heal()
        inv, _ = await w.until(lambda i: len(i.services["web"].endpoints) == 1)
        assert _endpoints(inv, "web") == [("10.0.0.1", 8080, Health.UNHEALTHY)]


async def test_after_an_index_reset_changes_are_still_attributed(
    consul_double: ConsulDouble,
) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080, id="web-1", node="n1")
    d.register("web", "10.0.0.2", 8080, id="web-2", node="n2")
    d.register("api", "10.0.0.3", 9000, node="n1")
    async with watching(_settings(d)) as w:
        await w.next()
        await _settled(d)
        resyncs, census = w.watcher.full_resyncs, w.watcher.census_reads
        d.reset_stats()
        d.reset_index(1)  # a snapshot restore: every watch starts over, the census is retaken
        await d.wait_for_requests_async("/v1/catalog/services", 2)
        await w.status_until(lambda s: w.watcher.census_reads > census)
        await _settled(d)
        assert w.watcher.full_resyncs == resyncs + 1
        d.set_check("web-1", "critical")
        await w.until(lambda i: _endpoints(i, "web")[0][2] is Health.UNHEALTHY)
        d.deregister("web-2")
        await w.until(lambda i: len(i.services["web"].endpoints) == 1)
        assert w.watcher.full_resyncs == resyncs + 1  # attributed by the census, not re-read
        assert d.request_count("/v1/catalog/services") < 20


def test_census_changes_names_owners_of_checks_that_came_went_or_were_written() -> None:
    from xds_server.sources.consul import census_changes

    previous = {("n1", "service:a-1"): ("a", 5), ("n1", "serfHealth"): ("", 2)}
    current = {("n1", "service:b-1"): ("b", 9), ("n1", "serfHealth"): ("", 2)}
    services_on = {"n1": {"a", "c"}}
    assert census_changes(services_on, previous, current, 8, 9) == {"a", "b"}
    # Written in the round (ModifyIndex in (after, upto]): a re-registered check.
    same = {("n1", "service:a-1"): ("a", 12), ("n1", "serfHealth"): ("", 2)}
    assert census_changes(services_on, previous, same, 10, 12) == {"a"}
    assert census_changes(services_on, previous, same, 12, 13) == set()
    # A node check that came or went: every service on the node, read or named by a check.
    no_serf = {("n1", "service:a-1"): ("a", 5)}
    assert census_changes(services_on, previous, no_serf, 20, 21) == {"a", "c"}


async def test_a_failing_census_falls_back_to_a_full_reread() -> None:
    class NoCensus(ScriptedApi):
        async def health_state(self, dc: str | None):  # type: ignore[override]
            raise ConsulHttpError("Consul error: 500")

    catalog: dict[str, list[str]] = {"web": []}
    settings = WatcherSettings.from_env({}, resync_interval=0, rate=50.0)
    api = NoCensus(settings, [(10, catalog), (12, catalog)])
    watcher = ConsulWatcher(settings, api_factory=lambda _: api)
    task = asyncio.create_task(watcher.run(lambda _: None))
    try:
        await asyncio.wait_for(api.enough.wait(), WAIT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert watcher.full_resyncs == 2  # the first read, then 10 → 12 with no census to tell
    assert watcher.census_reads == 0
