"""Subsets end to end: the Consul double's instances of one service ``api`` tagged ``v1`` x2
and ``v2`` x1 -> xds-server (``--registry consul``) -> a real Envoy -> real upstreams.

A 90/10 split by subset, a header-matched rule to ``v2``, and the ``v2`` instance going
critical: with no default subset its requests answer 503; with ``default_subset: v1`` they
go to ``v1``. How long Envoy takes to leave ``v2`` is measured and printed (the acceptance
figure is 1 s); the test bounds it only loosely, through the poll's deadline.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.consul_double import ConsulDouble
from tests.support import seed
from tests.support.consul_stack import consul_envoy
from tests.support.envoy import Envoy, free_port, http_get, wait_for
from tests.support.upstream import Upstream, upstreams

pytestmark = pytest.mark.envoy

CANARY = {"x-canary": "1"}
REQUESTS = 1_000


@dataclass
class Stack:
    consul: ConsulDouble
    envoy: Envoy
    port: int
    v1: list[Upstream]
    v2: Upstream


def documents(port: int, default_subset: str | None) -> list[dict[str, Any]]:
    policy: dict[str, Any] = {
        "subsets": [
            {"name": "v1", "tags": ["v1"]},
            {"name": "v2", "tags": ["v2"], "only_passing": True},
        ]
    }
    if default_subset is not None:
        policy["default_subset"] = default_subset
    return [
        seed.listener("public", port),
        {"kind": "ServicePolicy", "name": "api", "spec": policy},
        {
            "kind": "Route",
            "name": "api",
            "spec": {
                "listeners": ["public"],
                "rules": [
                    {
                        "matches": [{"headers": [{"name": "x-canary", "exact": "1"}]}],
                        "backends": [{"service": "api", "subset": "v2"}],
                    },
                    {
                        "backends": [
                            {"service": "api", "subset": "v1", "weight": 90},
                            {"service": "api", "subset": "v2", "weight": 10},
                        ]
                    },
                ],
            },
        },
    ]


@pytest.fixture(params=[None, "v1"], ids=["no-default", "default-v1"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    seed.seed_store(tmp_path / "store.db", documents(port, request.param))
    with ConsulDouble() as consul, upstreams("v1-a", "v1-b", "v2") as (v1a, v1b, v2):
        for backend, tag in ((v1a, "v1"), (v1b, "v1"), (v2, "v2")):
            consul.register(
                "api", "127.0.0.1", backend.port, id=backend.name, node=backend.name, tags=[tag]
            )
        with consul_envoy(
            consul,
            tmp_path / "store.db",
            lambda: http_get(port, headers=CANARY)[:2] == (200, "v2"),
            "the v2 subset serving through Envoy",
        ) as (_, envoy):
            yield Stack(consul, envoy, port, [v1a, v1b], v2)


def test_a_weighted_split_by_subset_and_a_header_rule(stack: Stack) -> None:
    answers = Counter(http_get(stack.port)[1] for _ in range(REQUESTS))
    print(f"split over {REQUESTS} requests: {dict(answers)}")
    assert set(answers) == {"v1-a", "v1-b", "v2"}
    v2_share = 100 * answers["v2"] / REQUESTS
    assert 7 <= v2_share <= 13, f"v2 got {v2_share:.1f} % (10 % wanted, within 3 points)"
    assert answers["v1-a"] > 0 and answers["v1-b"] > 0  # both v1 instances serve their share

    canary = Counter(http_get(stack.port, headers=CANARY)[1] for _ in range(100))
    assert canary == Counter({"v2": 100})


def test_the_v2_instance_going_critical_leaves_v2(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    fallback = "default-v1" in request.node.callspec.id
    v1_names = {up.name for up in stack.v1}
    before = len(stack.v2.requests)
    started = time.monotonic()
    stack.consul.set_check(stack.v2.name, "critical")

    def left_v2() -> bool:
        status, body, _ = http_get(stack.port, headers=CANARY)
        return (status == 200 and body in v1_names) if fallback else status == 503

    wait_for(left_v2, 10, "canary requests leave the critical v2 instance", stack.envoy.check_alive)
    delay = time.monotonic() - started
    print(
        f"v2 critical -> Envoy leaves v2 ({'default subset' if fallback else '503'}): "
        f"{delay * 1000:.0f} ms"
    )
    reached = len(stack.v2.requests)
    answers = [http_get(stack.port, headers=CANARY)[:2] for _ in range(50)]
    if fallback:
        assert {status for status, _ in answers} == {200}
        assert {body for _, body in answers} <= v1_names
    else:
        assert {status for status, _ in answers} == {503}
    split = Counter(http_get(stack.port)[:2] for _ in range(200))
    # The 10 % to v2 in the split rule also leaves it: 503 without fallback, v1 with it.
    assert all(body in v1_names or status == 503 for status, body in split)
    assert len(stack.v2.requests) == reached  # nothing reached v2 once it left
    assert reached >= before

    stack.consul.set_check(stack.v2.name, "passing")
    wait_for(
        lambda: http_get(stack.port, headers=CANARY)[:2] == (200, "v2"),
        10,
        "v2 back once its check passes",
        stack.envoy.check_alive,
    )
