"""Property: whatever config the model accepts, translated for proxyless gRPC clients, is
accepted by a real grpcio ``xds:///`` client (no NACK of any type).

Each generated config (``config_strategies.documents``) has its routes' hostnames replaced
by registry service names, so that every generated rule applies to a gRPC target; its
``Translation.grpc`` is served by the ADS server (in-process, on its own event loop in a
thread) to a new grpcio client process that calls every target once, so that it
subscribes every listener, route, cluster and assignment they use. The server's records
then say what the client did with each: every type ACKed, nothing NACKed.

Endpoints are loopback addresses (``127.0.0.x``, ``::1``) and host names: the client
connects to what it is sent, and must not reach out to random addresses.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from tests.integration.config_strategies import SERVICES, documents
from tests.support.envoy import wait_for
from xds_server.cache.snapshot import EMPTY_SNAPSHOT, Snapshot
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.cache.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_server.model import Config, Inventory, validate_config
from xds_server.model.inventory import Endpoint, Health, Service
from xds_server.model.problems import InvalidDocuments
from xds_server.server.grpc_server import start_ads_server
from xds_server.server.limits import StreamLimits
from xds_server.status import ProxyRegistry
from xds_server.translate import translate

ROOT = Path(__file__).resolve().parents[2]
CLIENT = [sys.executable, "-m", "tests.integration.grpc_xds_client"]
TYPES = (LISTENER, ROUTE, CLUSTER, ENDPOINT)

loopback_endpoints = st.builds(
    Endpoint,
    address=st.one_of(
        st.integers(1, 254).map(lambda last: f"127.0.0.{last}"),
        st.just("::1"),
        st.just("web.internal"),
    ),
    port=st.integers(0, 65535),
    weight=st.integers(0, 100_000),
    health=st.sampled_from(list(Health)),
    zone=st.sampled_from(["", "a", "b"]),
    region=st.sampled_from(["", "eu"]),
    priority=st.integers(0, 3),
    metadata=st.one_of(st.just({}), st.just({"version": "v2"})),
)


@st.composite
def grpc_inventories(draw: st.DrawFn) -> Inventory:
    services = {}
    for name in draw(st.lists(st.sampled_from(SERVICES), unique=True, min_size=1)):
        services[name] = Service(name, tuple(draw(st.lists(loopback_endpoints, max_size=3))))
    return Inventory.of(services)


class AdsThread:
    """The ADS server on its own event loop in a thread; the test talks to it through
    ``call`` (cache and registry live on that loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.cache = SnapshotCache()
        self.registry = ProxyRegistry()
        self.port = 0
        self._server: Any = None
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.result(timeout=20)

    def _run(self, started: Future[None]) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self._server, self.port = await start_ads_server(
                self.cache, self.registry, "127.0.0.1", 0, StreamLimits(max_resource_names=10_000)
            )

        self.loop.run_until_complete(start())
        started.set_result(None)
        self.loop.run_forever()

    def call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            return function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=20)

    def stop(self) -> None:
        async def stop() -> None:
            await self._server.stop(None)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def ads() -> Iterator[AdsThread]:
    server = AdsThread()
    try:
        yield server
    finally:
        server.stop()


def retargeted(raws: list[dict[str, Any]], targets: list[str]) -> list[dict[str, Any]]:
    """Every route's hostnames replaced by one registry service (its gRPC target)."""
    result = []
    for index, raw in enumerate(raws):
        if raw["kind"] == "Route":
            target = targets[index % len(targets)]
            raw = {**raw, "spec": {**raw["spec"], "hostnames": [target]}}
        result.append(raw)
    return result


def config_of(raws: list[dict[str, Any]]) -> Config:
    return Config.from_documents(
        (raw["kind"], raw["name"], raw["spec"], revision) for revision, raw in enumerate(raws, 1)
    )


_examples = iter(range(1, 1_000_000))


class ProbingClient:
    """A grpcio client process that calls every target once and stays connected (and
    answering the server) until ``close``."""

    def __init__(self, ads: AdsThread, node_id: str, targets: list[str], workdir: Path) -> None:
        bootstrap = {
            "xds_servers": [
                {
                    "server_uri": f"127.0.0.1:{ads.port}",
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": {"id": node_id, "locality": {}},
        }
        path = workdir / f"{node_id}.json"
        path.write_text(json.dumps(bootstrap))
        first, *others = [f"xds:///{target}" for target in targets]
        self.process = subprocess.Popen(
            [*CLIENT, first, "Say", "0", "--timeout", "10", "--probe", *others],
            env={**os.environ, "GRPC_XDS_BOOTSTRAP": str(path)},
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.outcome = self.process.stdout.readline()  # its calls are done

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def replies(ads: AdsThread, node_id: str) -> dict[str, tuple[str, str, str | None]] | None:
    """Per type: (sent, acked, NACK message), once the client has subscribed every type and
    answered the last response of each (a type with nothing sent, its names absent, has
    nothing to answer); None until then."""

    def read() -> dict[str, tuple[str, str, str | None]] | None:
        proxy = ads.registry.get(node_id)
        if proxy is None or not set(TYPES) <= set(proxy.types):
            return None
        result = {}
        for type_url, status in proxy.types.items():
            nack = status.last_nack
            # The client opens one ADS stream per target (grpcio: one XdsClient per channel
            # target), all sharing this record: it holds the last response sent on any of
            # them, and only that response's ACK (or NACK) answers it.
            answered = status.acked_version == status.sent_version or (
                nack is not None and nack.nonce == status.sent_nonce
            )
            if not status.sent_nonce:
                continue  # subscribed, nothing sent (absent): nothing to answer
            if not answered:
                return None
            result[type_url] = (
                status.sent_version,
                status.acked_version,
                nack.message if nack else None,
            )
        return result

    found: dict[str, tuple[str, str, str | None]] | None = ads.call(read)
    return found


def answers_of(
    ads: AdsThread, node_id: str, targets: list[str], workdir: Path
) -> tuple[dict[str, tuple[str, str, str | None]], str]:
    """What a new client did with each type it was sent, and its calls' outcomes."""
    client = ProbingClient(ads, node_id, targets, workdir)
    try:
        answered = wait_for(lambda: replies(ads, node_id), 20, "the client's answers")
    except TimeoutError as error:
        raise AssertionError(f"{error}; the server's records: {statuses(ads, node_id)}") from None
    finally:
        client.close()
    return answered, client.outcome


def statuses(ads: AdsThread, node_id: str) -> Any:
    """What the registry has of the client, for a failure's message."""

    def read() -> Any:
        proxy = ads.registry.get(node_id)
        if proxy is None:
            return None
        return {
            t.rsplit(".", 1)[-1]: (s.sent_version, s.sent_nonce, s.acked_version, s.last_nack)
            for t, s in proxy.types.items()
        }

    return ads.call(read)


@settings(
    # 12 per CI run (each example is one grpcio client process, ~1-3 s);
    # XDS_TEST_GRPC_EXAMPLES=200 for a bug hunt.
    max_examples=int(os.environ.get("XDS_TEST_GRPC_EXAMPLES", "12")),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(raws=documents(), inventory=grpc_inventories())
def test_every_valid_config_is_accepted_by_a_grpc_client(
    raws: list[dict[str, Any]], inventory: Inventory, ads: AdsThread, tmp_path: Path
) -> None:
    targets = sorted(inventory.services)
    raws = retargeted(raws, targets)
    try:
        config = config_of(raws)
    except InvalidDocuments:
        assume(False)  # a service name that is no hostname (``shadow_2``)
    assume(validate_config(config, inventory).ok)
    resources = translate(inventory, config).grpc
    snapshot = Snapshot.build(resources.messages())
    ads.call(ads.cache.set_snapshots, EMPTY_SNAPSHOT, grpc=snapshot)
    node_id = f"generated-{next(_examples)}"
    answered, outcome = answers_of(ads, node_id, targets, tmp_path)
    context = f"{yaml.safe_dump(raws)}\n{inventory}\nclient: {outcome}"
    for type_url, (_, acked, nack) in answered.items():
        assert nack is None, f"{type_url} NACKed: {nack}\n{context}"
        assert acked, context  # ACKed


def test_the_check_sees_a_nack(ads: AdsThread, tmp_path: Path) -> None:
    """The same check on a cluster gRPC refuses (``MAGLEV``): the NACK is seen, so the
    property above could fail."""
    inventory = Inventory.of({"api": Service("api", (Endpoint("127.0.0.1", 1),))})
    resources = translate(inventory, Config()).grpc
    messages = list(resources.messages())
    for index, message in enumerate(messages):
        if message.DESCRIPTOR.full_name == "envoy.config.cluster.v3.Cluster":
            refused = cluster_pb2.Cluster()
            refused.CopyFrom(message)
            refused.lb_policy = cluster_pb2.Cluster.MAGLEV
            messages[index] = refused
    ads.call(ads.cache.set_snapshots, EMPTY_SNAPSHOT, grpc=Snapshot.build(messages))
    node_id = f"refused-{next(_examples)}"
    client = ProbingClient(ads, node_id, ["api"], tmp_path)
    try:
        # The cluster NACKed, no EDS follows: wait for the three types it was sent.
        answered = wait_for(lambda: cds_answered(ads, node_id), 20, "the client's answers")
    finally:
        client.close()
    sent, acked, nack = answered[CLUSTER]
    assert nack is not None and acked != sent
    assert answered[LISTENER][2] is None  # only the cluster is refused


def cds_answered(ads: AdsThread, node_id: str) -> dict[str, tuple[str, str, str | None]] | None:
    def read() -> dict[str, tuple[str, str, str | None]] | None:
        proxy = ads.registry.get(node_id)
        status = proxy.types.get(CLUSTER) if proxy is not None else None
        if proxy is None or status is None or status.last_nack is None:
            return None
        return {
            t: (s.sent_version, s.acked_version, s.last_nack.message if s.last_nack else None)
            for t, s in proxy.types.items()
        }

    found: dict[str, tuple[str, str, str | None]] | None = ads.call(read)
    return found
