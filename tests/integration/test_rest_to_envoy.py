"""Routes written through the REST API do what they say in a real Envoy.

One server (``xds-server serve`` with a static registry of local upstreams and a SQLite
store) and one Envoy (from ``envoy/bootstrap.yaml``) for the module; every operator
document goes through the REST API. Each test attaches its own route, on its own hostname,
to the one listener, waits until Envoy behaves accordingly (polling, with a deadline) and
prints how long that took.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.rest_stack import (
    RestEnvoy,
    envoy_cluster,
    listener,
    registry_yaml,
    rest_envoy,
    route,
    to,
)
from tests.support.upstream import Upstream

pytestmark = pytest.mark.envoy

#: service -> its instances (each an upstream answering with its own name).
SERVICES = {
    "api": ["api-1"],
    "api-v2": ["api-v2"],
    "web": ["web-1"],
    "flaky": ["flaky"],
    "slow": ["slow"],
    "sticky": ["sticky-1", "sticky-2", "sticky-3", "sticky-4"],
    "exact-svc": ["exact-svc"],
    "regex-svc": ["regex-svc"],
    "host-exact": ["host-exact"],
}
SLOW_ANSWER = 0.6  # seconds the "slow" instance takes to answer


@dataclass
class Stack(RestEnvoy):
    upstreams: dict[str, Upstream]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("rest-to-envoy")
    started = {
        name: Upstream(name, delay=SLOW_ANSWER if name == "slow" else 0.0).start()
        for names in SERVICES.values()
        for name in names
    }
    try:
        registry = tmp / "registry.yaml"
        registry.write_text(
            registry_yaml({s: [started[n] for n in names] for s, names in SERVICES.items()})
        )
        with rest_envoy(registry, tmp / "store.db") as rest:
            stack = Stack(rest.server, rest.envoy, rest.api, rest.traffic, started)
            stack.api.put(listener("public", stack.traffic.port))
            stack.converge(
                "listener PUT -> Envoy listens",
                lambda: stack.traffic.get("nothing.test").status_code == 404,
            )
            yield stack
    finally:
        for upstream in started.values():
            upstream.stop()


def test_path_prefixes_route_to_their_services(stack: Stack) -> None:
    stack.api.put(
        route(
            "paths",
            ["paths.test"],
            [
                {"matches": [{"path": {"prefix": "/api"}}], "backends": to("api")},
                {"matches": [{"path": {"prefix": "/web/"}}], "backends": to("web")},
            ],
        )
    )
    stack.converge(
        "route PUT -> Envoy routes by path",
        lambda: stack.traffic.body("paths.test", "/api") == "api-1",
    )
    body = stack.traffic.body
    assert body("paths.test", "/api/users/7") == "api-1"
    assert body("paths.test", "/web") == "web-1"  # a trailing "/" in a prefix is ignored
    assert body("paths.test", "/web/index.html") == "web-1"
    # What a client sends on a non-default port still matches the hostname.
    assert body(f"paths.test:{stack.traffic.port}", "/api") == "api-1"
    # Prefixes match whole path segments; nothing else matches on this hostname.
    assert stack.traffic.get("paths.test", "/apix").status_code == 404
    assert stack.traffic.get("paths.test", "/").status_code == 404
    assert stack.traffic.get("other.test", "/api").status_code == 404


def test_a_header_sends_canaries_to_v2(stack: Stack) -> None:
    # The header rule is listed second, yet wins: more header matches go first.
    stack.api.put(
        route(
            "canary",
            ["canary.test"],
            [
                {"backends": to("api")},
                {
                    "matches": [{"headers": [{"name": "x-canary", "exact": "1"}]}],
                    "backends": to("api-v2"),
                },
            ],
        )
    )
    canary = {"x-canary": "1"}
    stack.converge(
        "route PUT -> Envoy routes by header",
        lambda: stack.traffic.body("canary.test", headers=canary) == "api-v2",
    )
    body = stack.traffic.body
    assert [body("canary.test", headers=canary) for _ in range(10)] == ["api-v2"] * 10
    assert [body("canary.test") for _ in range(10)] == ["api-1"] * 10
    assert body("canary.test", headers={"x-canary": "0"}) == "api-1"


def test_precedence_of_paths_and_hostnames(stack: Stack) -> None:
    """The rules are listed in the worst order; Envoy still tries them by precedence."""
    wildcard = route(
        "prec-wild",
        ["*.prec.test"],
        [
            {"matches": [{"path": {"prefix": "/"}}], "backends": to("web")},
            {"matches": [{"path": {"regex": "/item/[0-9]+"}}], "backends": to("regex-svc")},
            {"matches": [{"path": {"prefix": "/shop"}}], "backends": to("api")},
            {"matches": [{"path": {"prefix": "/shop/cart"}}], "backends": to("api-v2")},
            {"matches": [{"path": {"exact": "/shop/cart/checkout"}}], "backends": to("exact-svc")},
        ],
    )
    exact_host = route("prec-exact", ["a.prec.test"], [{"backends": to("host-exact")}])
    admin_only = route(
        "prec-admin",
        ["c.prec.test"],
        [{"matches": [{"path": {"prefix": "/admin"}}], "backends": to("host-exact")}],
    )
    stack.api.apply([wildcard, exact_host, admin_only])
    stack.converge(
        "apply -> Envoy routes by precedence",
        lambda: stack.traffic.body("a.prec.test") == "host-exact",
    )
    expected = {
        "/shop/cart/checkout": "exact-svc",  # an exact path first
        "/shop/cart/checkout/x": "api-v2",  # then the longest prefix
        "/shop/cart": "api-v2",
        "/shop/cartx": "api-1",  # not under /shop/cart (whole segments), but under /shop
        "/shop/12": "api-1",  # every real prefix before a regex
        "/item/12": "regex-svc",  # a regex before the catch-all
        "/item/twelve": "web-1",
        "/": "web-1",
    }
    seen = {path: stack.traffic.body("b.prec.test", path) for path in expected}
    assert seen == expected
    # The route naming the exact hostname beats the wildcard route, whatever the path.
    for path in expected:
        assert stack.traffic.body("a.prec.test", path) == "host-exact"
    # A more specific hostname does not hide the wildcard route's other rules.
    assert stack.traffic.body("c.prec.test", "/admin/users") == "host-exact"
    assert stack.traffic.body("c.prec.test", "/shop/12") == "api-1"
    assert stack.traffic.body("c.prec.test", "/") == "web-1"


def test_a_90_10_split_over_1000_requests(stack: Stack) -> None:
    stack.api.put(route("split", ["split.test"], [{"backends": to(("api", 90), ("api-v2", 10))}]))
    stack.converge(
        "route PUT -> Envoy splits", lambda: stack.traffic.get("split.test").status_code == 200
    )
    started = time.monotonic()
    counts = Counter(stack.traffic.body("split.test") for _ in range(1000))
    elapsed = time.monotonic() - started
    assert set(counts) == {"api-1", "api-v2"}
    share = {name: counts[name] / 10 for name in counts}
    print(
        f"90/10 split over 1000 requests: api {share['api-1']:.1f}%, "
        f"api-v2 {share['api-v2']:.1f}% ({elapsed:.2f} s)"
    )
    assert abs(share["api-v2"] - 10) <= 5
    assert abs(share["api-1"] - 90) <= 5


def test_a_retry_policy_hides_one_503_and_num_retries_0_does_not(stack: Stack) -> None:
    flaky = stack.upstreams["flaky"]
    policy: dict[str, Any] = {
        "kind": "RetryPolicy",
        "name": "on-5xx",
        "spec": {"retry_on": ["5xx"], "num_retries": 2, "backoff": {"base_interval": "10ms"}},
    }
    stack.api.put(policy)
    stack.api.put(
        route("retry", ["retry.test"], [{"backends": to("flaky"), "retry": {"policy": "on-5xx"}}])
    )
    stack.converge(
        "route PUT -> Envoy routes to flaky", lambda: stack.traffic.body("retry.test") == "flaky"
    )

    flaky.fail_next = [503]
    before = len(flaky.requests)
    answer = stack.traffic.get("retry.test")
    assert (answer.status_code, answer.text) == (200, "flaky")
    assert len(flaky.requests) - before == 2  # the 503, then the retry that succeeded
    assert flaky.fail_next == []

    stack.api.put({**policy, "spec": {**policy["spec"], "num_retries": 0}})

    def the_503_gets_through() -> bool:
        flaky.fail_next = [503]
        return bool(stack.traffic.get("retry.test").status_code == 503)

    stack.converge("retry policy PUT -> Envoy stops retrying", the_503_gets_through)
    flaky.fail_next = [503]
    before = len(flaky.requests)
    assert stack.traffic.get("retry.test").status_code == 503
    assert len(flaky.requests) - before == 1  # no retry
    assert stack.traffic.get("retry.test").status_code == 200  # one failure only


def test_a_request_timeout_answers_504(stack: Stack) -> None:
    timeout_route = route(
        "timeout", ["timeout.test"], [{"backends": to("slow"), "timeouts": {"request": "150ms"}}]
    )
    stack.api.put(timeout_route)
    stack.converge(
        "route PUT -> Envoy times out", lambda: stack.traffic.get("timeout.test").status_code == 504
    )
    started = time.monotonic()
    answer = stack.traffic.get("timeout.test")
    elapsed = time.monotonic() - started
    print(
        f"request timeout 150ms, upstream answers after {SLOW_ANSWER}s: "
        f"{answer.status_code} after {elapsed * 1000:.0f} ms"
    )
    assert answer.status_code == 504
    assert answer.text == "upstream request timeout"
    assert 0.1 <= elapsed < SLOW_ANSWER

    # The same upstream with a longer timeout: the 504 came from the timeout, not the upstream.
    timeout_route["spec"]["rules"][0]["timeouts"] = {"request": "3s"}
    stack.api.put(timeout_route)
    stack.converge(
        "route PUT -> Envoy waits longer",
        lambda: stack.traffic.get("timeout.test").status_code == 200,
    )
    started = time.monotonic()
    answer = stack.traffic.get("timeout.test")
    elapsed = time.monotonic() - started
    print(f"request timeout 3s: {answer.status_code} after {elapsed * 1000:.0f} ms")
    assert (answer.status_code, answer.text) == (200, "slow")
    assert elapsed >= SLOW_ANSWER


def test_redirects(stack: Stack) -> None:
    stack.api.put(
        route(
            "redirect",
            ["redirect.test"],
            [
                {
                    "matches": [{"path": {"exact": "/old"}}],
                    "filters": {
                        "redirect": {
                            "scheme": "https",
                            "hostname": "new.example.com",
                            "path": "/new",
                            "status_code": 301,
                        }
                    },
                },
                {
                    "matches": [{"path": {"prefix": "/docs"}}],
                    "filters": {"redirect": {"prefix": "/v2/docs", "status_code": 308}},
                },
                {"backends": to("web")},
            ],
        )
    )
    stack.converge(
        "route PUT -> Envoy redirects",
        lambda: stack.traffic.get("redirect.test", "/old").status_code == 301,
    )
    answer = stack.traffic.get("redirect.test", "/old")
    assert answer.headers["location"] == "https://new.example.com/new"
    answer = stack.traffic.get("redirect.test", "/docs/intro?lang=en")
    assert answer.status_code == 308
    assert answer.headers["location"] == "http://redirect.test/v2/docs/intro?lang=en"
    # Hostnames match without the Host header's port, so a redirect does not keep it
    # either (docs/routing.md): a redirect meant for a non-default port names the port.
    answer = stack.traffic.get(f"redirect.test:{stack.traffic.port}", "/docs")
    assert answer.headers["location"] == "http://redirect.test/v2/docs"
    assert stack.traffic.body("redirect.test", "/other") == "web-1"


def test_rewrites_and_header_changes(stack: Stack) -> None:
    web = stack.upstreams["web-1"]
    stack.api.put(
        route(
            "rewrite",
            ["rewrite.test"],
            [
                {
                    "matches": [{"path": {"prefix": "/static"}}],
                    "backends": to("web"),
                    "filters": {"rewrite": {"prefix": "/"}},
                },
                {
                    "matches": [{"path": {"prefix": "/v1"}}],
                    "backends": to("web"),
                    "filters": {"rewrite": {"prefix": "/v2"}},
                },
                {
                    "matches": [{"path": {"prefix": "/host"}}],
                    "backends": to("web"),
                    "filters": {"rewrite": {"hostname": "internal.example"}},
                },
                {
                    "matches": [{"path": {"prefix": "/headers"}}],
                    "backends": to("web"),
                    "filters": {
                        "request_headers": {
                            "set": {"x-edge": "true", "x-percent": "100%"},
                            "add": {"x-multi": "b"},
                            "remove": ["x-debug"],
                        },
                        "response_headers": {
                            "set": {"cache-control": "no-store"},
                            "add": {"x-served-by": "edge"},
                            "remove": ["x-upstream"],
                        },
                    },
                },
            ],
        )
    )
    stack.converge(
        "route PUT -> Envoy rewrites",
        lambda: stack.traffic.get("rewrite.test", "/static/a.css").status_code == 200,
    )

    def upstream_path(path: str) -> str:
        assert stack.traffic.body("rewrite.test", path) == "web-1"
        return web.requests[-1][":path"]

    assert upstream_path("/static/css/a.css") == "/css/a.css"
    assert upstream_path("/static") == "/"
    assert upstream_path("/v1/items?q=1") == "/v2/items?q=1"
    assert upstream_path("/host/x") == "/host/x"
    assert web.requests[-1]["host"] == "internal.example"
    assert upstream_path("/v1") == "/v2"
    assert web.requests[-1]["host"] == "rewrite.test"  # no host rewrite on this rule

    answer = stack.traffic.get(
        "rewrite.test", "/headers", {"x-edge": "false", "x-multi": "a", "x-debug": "1"}
    )
    assert answer.status_code == 200
    lines = web.header_lines[-1]
    assert [v for k, v in lines if k == "x-edge"] == ["true"]  # set replaces
    assert [v for k, v in lines if k == "x-multi"] == ["a", "b"]  # add appends
    assert [v for k, v in lines if k == "x-percent"] == ["100%"]  # a literal value
    assert "x-debug" not in web.requests[-1]  # removed
    assert answer.headers.get_list("cache-control") == ["no-store"]
    assert answer.headers.get_list("x-served-by") == ["edge"]
    assert "x-upstream" not in answer.headers
    # Other rules keep the upstream's response headers.
    assert stack.traffic.get("rewrite.test", "/v1").headers["x-upstream"] == "web-1"


def test_ring_hash_on_a_header_is_sticky(stack: Stack) -> None:
    policy = {
        "kind": "ServicePolicy",
        "name": "sticky",
        "spec": {
            "load_balancing": {"policy": "ring_hash", "hash_policies": [{"header": "x-user"}]}
        },
    }
    stack.api.apply([policy, route("sticky", ["sticky.test"], [{"backends": to("sticky")}])])

    def ring_hash_in_envoy() -> bool:
        cluster = envoy_cluster(stack.envoy, "sticky")
        return cluster is not None and cluster.get("lb_policy") == "RING_HASH"

    stack.converge("apply -> Envoy's cluster uses a ring hash", ring_hash_in_envoy)
    stack.converge(
        "apply -> Envoy routes to the ring",
        lambda: stack.traffic.body("sticky.test").startswith("sticky-"),
    )
    users = [f"user-{i}" for i in range(10)]
    landed: dict[str, set[str]] = {user: set() for user in users}
    for _ in range(5):  # 50 requests, users interleaved
        for user in users:
            landed[user].add(stack.traffic.body("sticky.test", headers={"x-user": user}))
    print("ring hash on x-user, 5 requests each:", {u: sorted(i) for u, i in landed.items()})
    assert all(len(instances) == 1 for instances in landed.values())
    spread = {instance for instances in landed.values() for instance in instances}
    assert len(spread) >= 2
    assert all(instance.startswith("sticky-") for instance in spread)

    # Without the policy (round robin) the same user is spread over the instances.
    stack.api.delete("ServicePolicy", "sticky")
    stack.converge("policy DELETE -> Envoy round-robins", lambda: not ring_hash_in_envoy())
    one_user = {stack.traffic.body("sticky.test", headers={"x-user": "user-0"}) for _ in range(20)}
    assert len(one_user) >= 2
