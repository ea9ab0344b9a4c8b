"""pytest fixtures for the Consul double.

In a test module: `pytest_plugins = ["tests.consul_double.fixtures"]` (or import the fixtures
by name). `consul_double` is a started double with defaults, stopped after the test;
`consul_double_factory(**kwargs)` starts customised ones (ACL token, TLS, several datacenters)
and stops them all after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .server import ConsulDouble

__all__ = ["consul_double", "consul_double_factory"]


@pytest.fixture
def consul_double() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


@pytest.fixture
def consul_double_factory() -> Iterator[Callable[..., ConsulDouble]]:
    started: list[ConsulDouble] = []

    def make(**kwargs: Any) -> ConsulDouble:
        double = ConsulDouble(**kwargs)
        double.start()
        started.append(double)
        return double

    yield make
    for double in reversed(started):
        double.stop()
