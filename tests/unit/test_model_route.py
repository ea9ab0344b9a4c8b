from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.unit.model_builders import error_at, problems, route
from xds_server.model import RetryPolicySpec, RouteSpec, parse_document
from xds_server.model.duration import Duration
from xds_server.model.route import Match, RedirectStatus, RetryRef

DESIGN_EXAMPLE = """
kind: Route
name: shop
spec:
  listeners: [public]
  hostnames: ["shop.example.com"]
  rules:
    - matches: [{path: {prefix: /api}, headers: [{name: x-canary, exact: "1"}]}]
      backends: [{service: api, weight: 90}, {service: api-v2, weight: 10}]
      retry: {policy: default}            # or inline fields
      timeouts: {request: 5s}
"""

BACKENDS = [{"service": "web"}]


def spec_of(raw: dict[str, Any]) -> RouteSpec:
    parsed = parse_document(raw).spec
    assert isinstance(parsed, RouteSpec)
    return parsed


def rule(**fields: Any) -> dict[str, Any]:
    return {"backends": BACKENDS, **fields}


def one_rule(**fields: Any) -> dict[str, Any]:
    return route(rules=[rule(**fields)])


def test_design_example_validates_as_is() -> None:
    spec = spec_of(yaml.safe_load(DESIGN_EXAMPLE))
    (only,) = spec.rules
    assert only.retry == RetryRef(policy="default")
    assert only.timeouts is not None and only.timeouts.request == Duration(5_000)
    assert [b.weight for b in only.backends] == [90, 10]
    assert only.matches[0].headers[0].exact == "1"


def test_defaults() -> None:
    spec = spec_of(route())
    assert spec.hostnames == ("*",)
    (only,) = spec.rules
    assert only.matches == (Match(),)
    assert only.matches[0].path_prefix == "/"
    assert only.backends[0].weight == 1
    assert only.retry is None and only.timeouts is None


def test_empty_matches_mean_everything() -> None:
    assert spec_of(one_rule(matches=[])).rules[0].matches == (Match(),)


def test_inline_retry() -> None:
    retry = spec_of(one_rule(retry={"num_retries": 3, "retriable_status_codes": [503]}))
    inline = retry.rules[0].retry
    assert isinstance(inline, RetryPolicySpec)
    assert inline.num_retries == 3
    assert "retriable-status-codes" in inline.retry_on


def test_every_match_kind() -> None:
    spec = spec_of(
        one_rule(
            matches=[
                {"path": {"exact": "/a"}},
                {"path": {"regex": "/items/[0-9]+"}, "method": "GET"},
                {
                    "headers": [
                        {"name": ":authority", "exact": "x"},
                        {"name": "x-a", "prefix": "v"},
                        {"name": "x-b", "regex": "v[0-9]"},
                        {"name": "x-c", "present": True, "invert": True},
                    ],
                    "query_params": [
                        {"name": "q", "exact": ""},
                        {"name": "r", "regex": "[a-z]+"},
                        {"name": "s", "present": True},
                    ],
                },
            ]
        )
    )
    assert len(spec.rules[0].matches) == 3


def test_redirect_rule_needs_no_backends() -> None:
    spec = spec_of(
        route(rules=[{"filters": {"redirect": {"scheme": "https", "status_code": 308}}}])
    )
    redirect = spec.rules[0].filters.redirect
    assert redirect is not None and redirect.status_code is RedirectStatus.PERMANENT_REDIRECT


def test_all_filters() -> None:
    spec = spec_of(
        one_rule(
            filters={
                "request_headers": {"set": {"x-a": "1"}, "add": {"x-b": "2"}, "remove": ["x-c"]},
                "response_headers": {"set": {"cache-control": "no-store"}},
                "rewrite": {"prefix": "/v2", "hostname": "api.internal"},
                "mirror": {"service": "shadow", "percent": 12.5},
            },
            timeouts={"request": "10s", "per_try": "2s", "idle": "1m"},
        )
    )
    assert spec.rules[0].services == ("web", "shadow")


def test_specs_are_hashable_and_dump_round_trips() -> None:
    raw = one_rule(filters={"request_headers": {"set": {"x-a": "1"}}})
    first, second = spec_of(raw), spec_of(raw)
    assert hash(first) == hash(second)
    assert spec_of(route(**first.model_dump(mode="json"))) == first  # type: ignore[arg-type]


BAD_RULES: list[tuple[dict[str, Any], str, str]] = [
    # paths
    ({"matches": [{"path": {}}]}, "matches[0].path", "set exactly one of exact, prefix, regex"),
    (
        {"matches": [{"path": {"exact": "/a", "prefix": "/a"}}]},
        "matches[0].path",
        "set exactly one of exact, prefix, regex",
    ),
    ({"matches": [{"path": {"prefix": "api"}}]}, "matches[0].path.prefix", "must start with '/'"),
    ({"matches": [{"path": {"exact": "/a b"}}]}, "matches[0].path.exact", "contains ' '"),
    ({"matches": [{"path": {"exact": "/a?b"}}]}, "matches[0].path.exact", "contains '?'"),
    (
        {"matches": [{"path": {"regex": "/(a"}}]},
        "matches[0].path.regex",
        "invalid RE2 regex: missing ): /(a",
    ),
    (
        {"matches": [{"path": {"regex": "(?=look)ahead"}}]},
        "matches[0].path.regex",
        "invalid RE2 regex: invalid perl operator: (?=",
    ),
    (
        {"matches": [{"path": {"regex": r"(a)\1"}}]},
        "matches[0].path.regex",
        r"invalid RE2 regex: invalid escape sequence: \1",
    ),
    ({"matches": [{"path": {"regex": ""}}]}, "matches[0].path.regex", "must not be empty"),
    ({"matches": [{"path": {"glob": "/*"}}]}, "matches[0].path.glob", "Extra inputs"),
    # headers
    ({"matches": [{"headers": [{"name": "x"}]}]}, "matches[0].headers[0]", "exactly one of"),
    (
        {"matches": [{"headers": [{"name": "x", "exact": "a", "present": True}]}]},
        "matches[0].headers[0]",
        "exactly one of exact, prefix, regex, present",
    ),
    (
        {"matches": [{"headers": [{"name": "bad name", "exact": "a"}]}]},
        "matches[0].headers[0].name",
        "not a valid header name",
    ),
    (
        {"matches": [{"headers": [{"name": "x", "exact": "a\nb"}]}]},
        "matches[0].headers[0].exact",
        "must not contain NUL, CR or LF",
    ),
    (
        {"matches": [{"headers": [{"name": "x", "prefix": ""}]}]},
        "matches[0].headers[0].prefix",
        "must not be empty",
    ),
    (
        {"matches": [{"headers": [{"name": "x", "regex": "[a"}]}]},
        "matches[0].headers[0].regex",
        "invalid RE2 regex: missing ]: [a",
    ),
    (
        {"matches": [{"headers": [{"name": "x", "present": False}]}]},
        "matches[0].headers[0].present",
        "True",
    ),
    # query parameters and method
    (
        {"matches": [{"query_params": [{"name": "q", "prefix": "a"}]}]},
        "matches[0].query_params[0].prefix",
        "Extra inputs",
    ),
    (
        {"matches": [{"query_params": [{"name": "", "exact": "a"}]}]},
        "matches[0].query_params[0].name",
        "at least 1 character",
    ),
    (
        {"matches": [{"query_params": [{"name": "q", "regex": "*"}]}]},
        "matches[0].query_params[0].regex",
        "invalid RE2 regex: no argument for repetition operator: *",
    ),
    ({"matches": [{"method": "get"}]}, "matches[0].method", "'GET'"),
    # backends
    ({"backends": []}, "", "needs at least one backend (or a redirect)"),
    ({"backends": [{"service": "web", "weight": 0}]}, "", "must not all be 0"),
    ({"backends": [{"service": "web", "weight": 1_000_001}]}, "backends[0].weight", "1000000"),
    ({"backends": [{"service": "web", "weight": -1}]}, "backends[0].weight", "0"),
    ({"backends": [{"service": "-web"}]}, "backends[0].service", "not a valid service name"),
    ({"backends": [{"service": "a"}, {"service": "a"}]}, "backends", "more than once: a"),
    ({"backends": [{"service": f"s{i}"} for i in range(65)]}, "backends", "at most 64"),
    # header mutations
    (
        {"filters": {"request_headers": {"set": {"host": "x"}}}},
        "filters.request_headers.set.host",
        "use rewrite.hostname",
    ),
    (
        {"filters": {"request_headers": {"remove": [":path"]}}},
        "filters.request_headers.remove[0]",
        "not a valid header name",
    ),
    (
        {"filters": {"response_headers": {"set": {"X-A": "1"}, "remove": ["x-a"]}}},
        "filters.response_headers",
        "header 'x-a' appears in both set and remove",
    ),
    (
        {"filters": {"request_headers": {"set": {"x-a": "1"}, "add": {"x-a": "2"}}}},
        "filters.request_headers",
        "appears in both set and add",
    ),
    (
        {"filters": {"request_headers": {"add": {"x-a": "\r"}}}},
        "filters.request_headers.add.x-a",
        "must not contain NUL, CR or LF",
    ),
    # redirect
    (
        {"filters": {"redirect": {"scheme": "https"}}},
        "",
        "a rule with a redirect forwards nothing",
    ),
    (
        {"backends": [], "filters": {"redirect": {"status_code": 304}}},
        "filters.redirect.status_code",
        "301",
    ),
    (
        {"backends": [], "filters": {"redirect": {"path": "/a", "prefix": "/b"}}},
        "filters.redirect",
        "at most one of path and prefix",
    ),
    (
        {
            "backends": [],
            "matches": [{"path": {"exact": "/a"}}],
            "filters": {"redirect": {"prefix": "/b"}},
        },
        "",
        "filters.redirect.prefix replaces a matched prefix",
    ),
    (
        {"backends": [], "filters": {"redirect": {"port": 0}}},
        "filters.redirect.port",
        "greater than or equal to 1",
    ),
    (
        {"backends": [], "filters": {"redirect": {"hostname": "*.example.com"}}},
        "filters.redirect.hostname",
        "not a valid hostname",
    ),
    (
        {"filters": {"redirect": {}, "mirror": {"service": "m"}}},
        "filters",
        "cannot be combined with rewrite or mirror",
    ),
    # rewrite
    ({"filters": {"rewrite": {}}}, "filters.rewrite", "set prefix, full_path or hostname"),
    (
        {"filters": {"rewrite": {"prefix": "/a", "full_path": "/b"}}},
        "filters.rewrite",
        "at most one of prefix and full_path",
    ),
    (
        {"matches": [{"path": {"regex": "/a.*"}}], "filters": {"rewrite": {"prefix": "/b"}}},
        "",
        "every match must be a path prefix",
    ),
    # mirror
    (
        {"filters": {"mirror": {"service": "m", "percent": 101}}},
        "filters.mirror.percent",
        "less than or equal to 100",
    ),
    ({"filters": {"mirror": {"percent": 1}}}, "filters.mirror.service", "Field required"),
    # timeouts
    ({"timeouts": {"request": "fast"}}, "timeouts.request", "not a valid duration"),
    (
        {"timeouts": {"request": "1s", "per_try": "2s"}},
        "timeouts",
        "per_try (2s) must not be longer than request (1s)",
    ),
    ({"timeouts": {"connect": "1s"}}, "timeouts.connect", "Extra inputs"),
    # retry
    (
        {"retry": {"policy": "default", "num_retries": 2}},
        "retry",
        "use either {policy: NAME} or inline retry fields, not both",
    ),
    ({"retry": {"policy": "Default"}}, "retry.policy", "not a valid name"),
    ({"retry": {"num_retries": 99}}, "retry.num_retries", "less than or equal to 10"),
    ({"retry": {"retry_on": ["oops"]}}, "retry.retry_on[0]", "'5xx'"),
    ({"priority": 1}, "priority", "Extra inputs"),
]


@pytest.mark.parametrize(("fields", "field", "reason"), BAD_RULES)
def test_invalid_rule(fields: dict[str, Any], field: str, reason: str) -> None:
    raw = route(rules=[{"backends": BACKENDS, **fields}])
    location = "spec.rules[0]" + (f".{field}" if field and not field.startswith("[") else field)
    assert reason in error_at(raw, location)


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({"listeners": []}, "spec.listeners", "must list at least one item"),
        ({"listeners": ["a", "a"]}, "spec.listeners", "more than once: a"),
        ({"listeners": ["Public"]}, "spec.listeners[0]", "not a valid name"),
        ({"rules": []}, "spec.rules", "must list at least one item"),
        ({"hostnames": []}, "spec.hostnames", "must list at least one item"),
        ({"hostnames": ["Shop.example.com"]}, "spec.hostnames[0]", "not a valid hostname"),
        ({"hostnames": ["shop.*.com"]}, "spec.hostnames[0]", "not a valid hostname"),
        ({"hostnames": ["*example.com"]}, "spec.hostnames[0]", "not a valid hostname"),
        ({"hostnames": ["a.com", "a.com"]}, "spec.hostnames", "more than once: a.com"),
        ({"hostname": ["a.com"]}, "spec.hostname", "Extra inputs"),
    ],
)
def test_invalid_route(spec: dict[str, Any], field: str, reason: str) -> None:
    assert reason in error_at(route(**spec), field)


def test_good_hostnames() -> None:
    spec = spec_of(route(hostnames=["*", "*.example.com", "a-b.example.com", "10.0.0.1"]))
    assert len(spec.hostnames) == 4


def test_only_the_bad_field_is_reported() -> None:
    """An invalid item must not also produce a bogus "too short" error on its list."""
    found = problems(route(rules=[{"backends": [{"service": "web", "weight": -5}]}]))
    assert [p.field for p in found] == ["spec.rules[0].backends[0].weight"]
