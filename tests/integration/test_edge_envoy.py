"""Edge policies end to end: config over REST to the server (a subprocess), a real Envoy,
local upstreams, a JWKS server, trace collectors.

- JWT: a token signed by the test's key (JWKS fetched by Envoy through the cluster the
  control plane made) passes and its claim reaches the service as a header; expired,
  wrong-audience, wrong-signature and missing tokens get 401; an opted-out rule needs no
  token; a missing required scope gets 403;
- rate limits: a burst beyond the bucket gets 429 with the configured headers, other routes
  and other header values are unaffected, the bucket refills;
- tracing: OTLP/gRPC and Zipkin collectors receive spans with the service name and tags;
- metrics: the Prometheus endpoint answers and parses, and nothing else of the admin shows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.rest_stack import Api, envoy_config, registry_yaml, start_server
from tests.support.collectors import OtlpCollector, Span, ZipkinCollector
from tests.support.envoy import Envoy, free_ports, wait_for
from tests.support.jwks_server import JwksServer
from tests.support.jwt import SigningKey, claims, jwks
from tests.support.upstream import Upstream

pytestmark = pytest.mark.envoy

ISSUER = "https://issuer.test"
PARTNER = "https://partner.test"
AUDIENCE = "orders"
PORTS = ("auth", "limits", "capped", "otel", "zipkin", "metrics")


@dataclass
class Stack:
    api: Api
    envoy: Envoy
    web: Upstream
    jwks: JwksServer
    key: SigningKey
    partner: SigningKey
    otlp: OtlpCollector
    zipkin: ZipkinCollector
    ports: dict[str, int]

    def get(
        self, listener: str, path: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.ports[listener]}{path}", headers=headers or {}, timeout=10
        )

    def token(self, lifetime: float = 3600, audience: str = AUDIENCE, **extra: Any) -> str:
        return self.key.sign(claims(ISSUER, audience, lifetime, sub="alice", **extra))


def doc(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": kind, "name": name, "spec": spec}


def listener(name: str, port: int, **spec: Any) -> dict[str, Any]:
    return doc("Listener", name, address="127.0.0.1", port=port, access_log=False, **spec)


def config(
    stack_ports: dict[str, int],
    jwks_url: str,
    partner: SigningKey,
    otlp: int,
    zipkin: int,
    admin: str,
) -> list[dict[str, Any]]:
    web = [{"service": "web"}]
    return [
        listener("auth", stack_ports["auth"]),
        listener("limits", stack_ports["limits"]),
        listener("capped", stack_ports["capped"]),
        listener(
            "otel",
            stack_ports["otel"],
            telemetry={
                "tracing": {
                    "collector": f"127.0.0.1:{otlp}",
                    "service_name": "edge-gateway",
                    "tags": {"deployment": "test-otel"},
                }
            },
        ),
        listener(
            "zipkin",
            stack_ports["zipkin"],
            telemetry={
                "tracing": {
                    "provider": "zipkin",
                    "collector": f"127.0.0.1:{zipkin}",
                    "sampling": 100,
                    "tags": {"deployment": "test-zipkin"},
                }
            },
        ),
        listener("metrics", stack_ports["metrics"], metrics={"admin_address": admin}),
        doc(
            "AuthPolicy",
            "corp",
            listeners=["auth"],
            providers=[
                {
                    "name": "idp",
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "jwks": {"url": jwks_url, "timeout": "2s"},
                    "token_sources": {
                        "headers": [{"name": "authorization", "prefix": "Bearer "}],
                        "cookies": ["session"],
                    },
                    "claim_to_headers": [{"claim": "sub", "header": "x-user"}],
                },
                {
                    "name": "partner",
                    "issuer": PARTNER,
                    "audiences": [AUDIENCE],
                    "jwks": {"inline": jwks(partner)},
                    "claim_to_headers": [{"claim": "sub", "header": "x-user"}],
                },
            ],
        ),
        doc(
            "Route",
            "shop",
            listeners=["auth"],
            rules=[
                {
                    "matches": [{"path": {"exact": "/health"}}],
                    "backends": web,
                    "auth": {"disabled": True},
                },
                {
                    "matches": [{"path": {"prefix": "/orders"}}],
                    "backends": web,
                    "auth": {"claims": [{"claim": "scope", "contains": "read:orders"}]},
                },
                {"backends": web},
            ],
        ),
        doc(
            "RateLimitPolicy",
            "burst",
            requests=3,
            per="1s",
            response_headers={"x-limited-by": "edge"},
            rate_limit_headers=True,
        ),
        doc("RateLimitPolicy", "per-key", requests=2, per="1s", by={"header": "x-api-key"}),
        doc(
            "RateLimitPolicy",
            "listener-cap",
            listeners=["capped"],
            requests=2,
            per="1s",
            status=503,
        ),
        doc(
            "Route",
            "limits",
            listeners=["limits"],
            rules=[
                {
                    "matches": [{"path": {"prefix": "/limited"}}],
                    "backends": web,
                    "rate_limit": {"policy": "burst"},
                },
                {
                    "matches": [{"path": {"prefix": "/per-key"}}],
                    "backends": web,
                    "rate_limit": {"policy": "per-key"},
                },
                {"backends": web},
            ],
        ),
        doc(
            "Route",
            "capped",
            listeners=["capped"],
            rules=[
                {
                    "matches": [{"path": {"exact": "/health"}}],
                    "backends": web,
                    "rate_limit": {"disabled": True},
                },
                {"backends": web},
            ],
        ),
        doc("Route", "traced", listeners=["otel", "zipkin"], rules=[{"backends": web}]),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("edge")
    key, partner = SigningKey("key-1"), SigningKey("partner-1", algorithm="ES256")
    with ExitStack() as cleanup:
        web = Upstream("web").start()
        cleanup.callback(web.stop)
        jwks_server = JwksServer(jwks(key)).start()
        cleanup.callback(jwks_server.stop)
        otlp = OtlpCollector().start()
        cleanup.callback(otlp.stop)
        zipkin = ZipkinCollector().start()
        cleanup.callback(zipkin.stop)
        registry = tmp / "registry.yaml"
        registry.write_text(registry_yaml({"web": [web]}))
        server = start_server(registry, tmp / "store.db")
        cleanup.callback(server.kill)
        envoy = Envoy(envoy_config(server.ads_port)).start()
        cleanup.callback(envoy.stop)
        api = Api(server.admin)
        cleanup.callback(api.close)
        ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
        api.apply(config(ports, jwks_server.url, partner, otlp.port, zipkin.port, envoy.admin))
        built = Stack(api, envoy, web, jwks_server, key, partner, otlp, zipkin, ports)
        for name, path in (
            ("limits", "/"),
            ("capped", "/health"),
            ("otel", "/"),
            ("zipkin", "/"),
            ("metrics", "/metrics"),
        ):
            wait_for(
                lambda n=name, p=path: built.get(n, p).status_code == 200,  # type: ignore[misc]
                30,
                f"the {name} listener",
                envoy.check_alive,
            )
        bearer = {"authorization": f"Bearer {built.token()}"}
        wait_for(
            lambda: built.get("auth", "/", bearer).status_code == 200,
            30,
            "a valid token accepted (JWKS fetched)",
            envoy.check_alive,
        )
        yield built
        envoy.check_alive()


def cluster_successes(envoy: Envoy, cluster: str) -> int:
    """``rq_success`` of ``cluster``'s hosts, from Envoy's ``/clusters``."""
    total = 0
    for line in envoy.get("/clusters").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "rq_success":
            total += int(parts[3])
    return total


# -- JWT -----------------------------------------------------------------------------------


def test_a_valid_token_passes_and_its_claim_reaches_the_service(stack: Stack) -> None:
    answer = stack.get("auth", "/anything", {"authorization": f"Bearer {stack.token()}"})
    assert (answer.status_code, answer.text) == (200, "web")
    seen = stack.web.requests[-1]
    assert seen[":path"] == "/anything"
    assert seen["x-user"] == "alice"
    assert "authorization" not in seen  # forward: false
    # The keys came from the JWKS server, fetched through the cluster the control plane made.
    assert stack.jwks.requests >= 1
    assert cluster_successes(stack.envoy, "jwks/corp/idp") >= 1


def test_a_token_from_a_cookie_or_the_second_provider_passes(stack: Stack) -> None:
    answer = stack.get("auth", "/", {"cookie": f"session={stack.token()}"})
    assert answer.status_code == 200
    partner = stack.partner.sign(claims(PARTNER, AUDIENCE, sub="bob"))
    answer = stack.get("auth", "/", {"authorization": f"Bearer {partner}"})
    assert answer.status_code == 200
    assert stack.web.requests[-1]["x-user"] == "bob"


@pytest.mark.parametrize(
    "case", ["missing", "expired", "wrong-audience", "wrong-signature", "wrong-issuer", "garbage"]
)
def test_bad_or_missing_tokens_get_401(stack: Stack, case: str) -> None:
    before = len(stack.web.requests)
    stranger = SigningKey("key-1")  # the same key id, another key
    token = {
        "missing": None,
        "expired": stack.token(lifetime=-3600),
        "wrong-audience": stack.token(audience="payments"),
        "wrong-signature": stranger.sign(claims(ISSUER, AUDIENCE, sub="mallory")),
        "wrong-issuer": stack.key.sign(claims("https://evil.test", AUDIENCE, sub="x")),
        "garbage": "not.a.jwt",
    }[case]
    headers = {"authorization": f"Bearer {token}"} if token else {}
    answer = stack.get("auth", "/", headers)
    assert answer.status_code == 401, (case, answer.text)
    assert len(stack.web.requests) == before  # the service saw nothing


def test_an_opted_out_rule_needs_no_token(stack: Stack) -> None:
    assert stack.get("auth", "/health").status_code == 200
    assert stack.get("auth", "/health-not").status_code == 401  # exact match only


def test_a_rule_requiring_a_scope_answers_403_without_it(stack: Stack) -> None:
    no_scope = {"authorization": f"Bearer {stack.token()}"}
    other_scope = {"authorization": f"Bearer {stack.token(scope='write:orders read:ordersx')}"}
    granted = {"authorization": f"Bearer {stack.token(scope='write:orders read:orders')}"}
    as_list = {"authorization": f"Bearer {stack.token(scope=['read:orders'])}"}
    assert stack.get("auth", "/orders", no_scope).status_code == 403
    assert stack.get("auth", "/orders", other_scope).status_code == 403
    assert stack.get("auth", "/orders").status_code == 401  # no token: 401 before 403
    assert stack.get("auth", "/orders", granted).status_code == 200
    assert stack.get("auth", "/orders", as_list).status_code == 200
    assert stack.get("auth", "/elsewhere", no_scope).status_code == 200


# -- rate limits ---------------------------------------------------------------------------


def burst(
    stack: Stack, listener: str, path: str, count: int, **headers: str
) -> list[httpx.Response]:
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.ports[listener]}", timeout=10) as http:
        return [http.get(path, headers=headers) for _ in range(count)]


def test_a_burst_beyond_the_bucket_gets_429_and_the_bucket_refills(stack: Stack) -> None:
    started = time.monotonic()
    answers = burst(stack, "limits", "/limited", 10)
    elapsed = time.monotonic() - started
    passed = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    assert len(passed) + len(limited) == len(answers)
    # 3 tokens to start with, 3 more per whole second that passed during the burst.
    assert 1 <= len(passed) <= 3 * (1 + int(elapsed)), [a.status_code for a in answers]
    assert limited, "no request was limited"
    assert limited[0].headers["x-limited-by"] == "edge"
    assert limited[0].headers["x-ratelimit-limit"].startswith("3")
    assert limited[0].headers["x-ratelimit-remaining"] == "0"
    # Other routes on the same listener are not limited meanwhile.
    assert all(a.status_code == 200 for a in burst(stack, "limits", "/other", 10))
    # The bucket refills within its fill interval (1s).
    wait_for(lambda: stack.get("limits", "/limited").status_code == 200, 5, "a refill")


def test_each_header_value_has_its_own_bucket(stack: Stack) -> None:
    first = [a.status_code for a in burst(stack, "limits", "/per-key", 8, **{"x-api-key": "a"})]
    assert 429 in first
    assert first[0] == 200
    second = burst(stack, "limits", "/per-key", 1, **{"x-api-key": "b"})
    assert second[0].status_code == 200


def test_a_listener_wide_limit_with_an_exempt_rule(stack: Stack) -> None:
    statuses = [a.status_code for a in burst(stack, "capped", "/", 8)]
    assert 503 in statuses and statuses[0] == 200  # the configured status
    assert all(a.status_code == 200 for a in burst(stack, "capped", "/health", 8))


# -- tracing -------------------------------------------------------------------------------


def traced(spans: list[Span], marker: str) -> list[Span]:
    return [span for span in spans if marker in span.tags.get("http.url", "")]


@pytest.mark.parametrize("collector", ["otel", "zipkin"])
def test_spans_reach_the_collector_with_service_name_and_tags(stack: Stack, collector: str) -> None:
    marker = f"/traced-{collector}-{time.monotonic_ns()}"
    for index in range(6):  # Envoy flushes every 5 spans (or 5 s)
        assert stack.get(collector, f"{marker}/{index}").status_code == 200
    sink = stack.otlp if collector == "otel" else stack.zipkin
    spans = wait_for(lambda: traced(sink.spans, marker), 20, f"spans at the {collector} collector")
    span = spans[0]
    assert span.tags["deployment"] == f"test-{collector}"
    expected_service = "edge-gateway" if collector == "otel" else "default"  # zipkin: node.cluster
    assert span.service_name == expected_service
    assert span.tags.get("guid:x-request-id")  # the request id travels with the span


# -- metrics -------------------------------------------------------------------------------


def test_envoys_prometheus_endpoint_answers_and_parses(stack: Stack) -> None:
    answer = stack.get("metrics", "/metrics")
    assert answer.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(answer.text)}
    assert "envoy_cluster_upstream_rq_total" in families or any(
        name.startswith("envoy_cluster_") for name in families
    )
    assert "envoy_server_live" in families
    # Only the metrics: the rest of the admin interface is not reachable.
    for path in ("/stats", "/config_dump", "/quitquitquit", "/metrics/../config_dump"):
        assert stack.get("metrics", path).status_code == 404, path
