"""The Consul double → xds-server (``--registry consul``) → a real Envoy, as context managers.

Several integration tests run the same stack: a started ``ConsulDouble`` holding the test's
instances, the server as an operator starts it (``--registry consul`` with
``CONSUL_HTTP_ADDR`` pointing at the double) over a SQLite store the test seeded, and an Envoy
on that server's ADS port, waited for until traffic flows. The test keeps starting the double
and its upstreams itself (what it registers differs from test to test); these helpers start and
stop the rest, in the same order every time:

- ``consul_server``: the server alone (for tests whose clients are not Envoy, e.g. proxyless
  gRPC), killed on exit;
- ``consul_envoy``: that server plus an Envoy (``node.id`` ``edge-1`` by default), yielded once
  ``ready`` holds; Envoy is stopped, then the server killed, on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from tests.consul_double import ConsulDouble
from tests.support.envoy import Envoy, bootstrap, running_envoy, wait_for
from tests.support.process import ServerProcess

#: How long Envoy may take to serve once started (the first push comes through Consul).
READY_TIMEOUT = 30.0


class ConsulEnvoy(NamedTuple):
    server: ServerProcess
    envoy: Envoy


@contextmanager
def consul_server(
    consul: ConsulDouble, store: Path, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """``xds-server serve --registry consul`` on free loopback ports over the SQLite ``store``,
    watching ``consul``; ``env`` adds variables (``CONSUL_HTTP_TOKEN``, ``XDS_SERVER_*``)."""
    server = ServerProcess.local(
        store,
        "consul",
        "--log-format",
        "text",
        env={"CONSUL_HTTP_ADDR": f"127.0.0.1:{consul.port}", **(env or {})},
    ).start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def consul_envoy(
    consul: ConsulDouble,
    store: Path,
    ready: Callable[[], object],
    what: str,
    *,
    node_id: str = "edge-1",
    env: Mapping[str, str] | None = None,
) -> Iterator[ConsulEnvoy]:
    """``consul_server`` and an Envoy bootstrapped from ``envoy/bootstrap.yaml`` on its ADS port;
    yields once ``ready`` is truthy (polled, ``what`` names it in the timeout's message)."""
    with (
        consul_server(consul, store, env) as server,
        running_envoy(bootstrap(server.ads_port, node_id=node_id)) as envoy,
    ):
        wait_for(ready, READY_TIMEOUT, what, envoy.check_alive)
        yield ConsulEnvoy(server, envoy)
