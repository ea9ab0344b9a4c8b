from __future__ import annotations

from typing import Any

from tests.unit.model_builders import config_of, doc, listener, route
from tests.unit.translate_helpers import as_dict, default_resources, only_route, routes_of


def single(rule: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    rule = {"backends": [{"service": "web"}], **rule}
    return only_route(config_of(listener(), route(rules=[rule]), *extra))


def action(rule: dict[str, Any], *extra: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = single(rule, *extra)["route"]
    return result


def test_one_route_configuration_per_listener_named_after_it() -> None:
    config = config_of(listener("a", 80), listener("b", 81), route(listeners=["a"]))
    resources = default_resources(config)
    assert [r.name for r in resources.routes] == ["a", "b"]  # type: ignore[attr-defined]
    assert as_dict(resources.routes[1]) == {"name": "b"}  # no routes: Envoy answers 404


def test_virtual_host_per_hostname_with_covering_routes() -> None:
    config = config_of(
        listener(),
        route("exact", hostnames=["a.example.com"]),
        route("wild", hostnames=["*.example.com"]),
        route("any"),
        route("both", hostnames=["b.example.com", "a.example.com"]),
    )
    hosts = routes_of(config)
    assert list(hosts) == ["*", "*.example.com", "a.example.com", "b.example.com"]
    routed = {host: [r["name"].split(".")[0] for r in routes] for host, routes in hosts.items()}
    # Most specific hostname first (Gateway API), then age.
    assert routed == {
        "*": ["any"],
        "*.example.com": ["wild", "any"],
        "a.example.com": ["exact", "both", "wild", "any"],
        "b.example.com": ["both", "wild", "any"],
    }
    (route_configuration,) = default_resources(config).routes
    for host in as_dict(route_configuration)["virtual_hosts"]:
        assert host["domains"] == [host["name"]]


def test_route_names_follow_the_document() -> None:
    config = config_of(
        listener(),
        route(
            rules=[
                {
                    "matches": [{"path": {"exact": "/a"}}, {"path": {"exact": "/b"}}],
                    "backends": [{"service": "web"}],
                }
            ]
        ),
    )
    names = [r["name"] for r in routes_of(config)["*"]]
    assert names == ["web.rules[0].matches[0]", "web.rules[0].matches[1]"]


def test_path_matches() -> None:
    assert single({})["match"] == {"prefix": "/"}
    assert single({"matches": [{"path": {"prefix": "/"}}]})["match"] == {"prefix": "/"}
    assert single({"matches": [{"path": {"prefix": "/api/"}}]})["match"] == {
        "path_separated_prefix": "/api"
    }
    assert single({"matches": [{"path": {"exact": "/a"}}]})["match"] == {"path": "/a"}
    assert single({"matches": [{"path": {"regex": "/a/[0-9]+"}}]})["match"] == {
        "safe_regex": {"regex": "/a/[0-9]+"}
    }


def test_header_query_and_method_matches() -> None:
    match = single(
        {
            "matches": [
                {
                    "headers": [
                        {"name": "x-a", "exact": "1"},
                        {"name": "x-b", "prefix": "v"},
                        {"name": "x-c", "regex": "v[0-9]"},
                        {"name": "x-d", "present": True, "invert": True},
                    ],
                    "query_params": [
                        {"name": "q", "exact": "1"},
                        {"name": "r", "regex": "[a-z]+"},
                        {"name": "s", "present": True},
                    ],
                    "method": "POST",
                }
            ]
        }
    )["match"]
    assert match["headers"] == [
        {"name": "x-a", "string_match": {"exact": "1"}},
        {"name": "x-b", "string_match": {"prefix": "v"}},
        {"name": "x-c", "string_match": {"safe_regex": {"regex": "v[0-9]"}}},
        {"name": "x-d", "present_match": True, "invert_match": True},
        {"name": ":method", "string_match": {"exact": "POST"}},
    ]
    assert match["query_parameters"] == [
        {"name": "q", "string_match": {"exact": "1"}},
        {"name": "r", "string_match": {"safe_regex": {"regex": "[a-z]+"}}},
        {"name": "s", "present_match": True},
    ]


def test_several_matches_become_several_routes() -> None:
    config = config_of(
        listener(),
        route(
            rules=[
                {
                    "matches": [{"path": {"prefix": "/a"}}, {"method": "GET"}],
                    "backends": [{"service": "web"}],
                }
            ]
        ),
    )
    assert len(routes_of(config)["*"]) == 2


def test_backends() -> None:
    assert action({})["cluster"] == "web"
    weighted = action(
        {
            "backends": [
                {"service": "a", "weight": 90},
                {"service": "b", "weight": 0},
                {"service": "c", "weight": 10},
            ]
        }
    )
    assert weighted["weighted_clusters"] == {
        "clusters": [
            {"name": "a", "weight": 90},
            {"name": "b", "weight": 0},
            {"name": "c", "weight": 10},
        ]
    }


def test_timeouts() -> None:
    result = action({"timeouts": {"request": "5s", "idle": "1m", "per_try": "500ms"}})
    assert result["timeout"] == "5s"
    assert result["idle_timeout"] == "60s"
    assert result["retry_policy"] == {"num_retries": 0, "per_try_timeout": "0.500s"}


def test_named_retry_policy() -> None:
    policy = doc(
        "RetryPolicy",
        "default",
        retry_on=["5xx", "reset"],
        num_retries=3,
        per_try_timeout="1s",
        backoff={"base_interval": "25ms"},
        retriable_status_codes=[503],
        retry_host_other=True,
        rate_limited_backoff={
            "reset_headers": [
                {"name": "Retry-After"},
                {"name": "X-Reset", "format": "unix_timestamp"},
            ],
            "max_interval": "30s",
        },
    )
    retry = action({"retry": {"policy": "default"}}, policy)["retry_policy"]
    assert retry == {
        "retry_on": "5xx,reset,retriable-status-codes",
        "num_retries": 3,
        "per_try_timeout": "1s",
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.250s"},
        "retriable_status_codes": [503],
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": "3",
        "rate_limited_retry_back_off": {
            "reset_headers": [
                {"name": "Retry-After"},
                {"name": "X-Reset", "format": "UNIX_TIMESTAMP"},
            ],
            "max_interval": "30s",
        },
    }


def test_inline_retry_and_per_try_override() -> None:
    retry = action(
        {"retry": {"num_retries": 2, "per_try_timeout": "3s"}, "timeouts": {"per_try": "1s"}}
    )["retry_policy"]
    assert retry["num_retries"] == 2
    assert retry["per_try_timeout"] == "1s"
    assert retry["retry_on"] == "connect-failure,refused-stream,unavailable,cancelled"


def test_header_mutations() -> None:
    result = single(
        {
            "filters": {
                "request_headers": {
                    "set": {"x-b": "2", "x-a": "1"},
                    "add": {"x-c": "3"},
                    "remove": ["x-d"],
                },
                "response_headers": {"add": {"x-e": "5"}, "remove": ["server"]},
            }
        }
    )
    assert result["request_headers_to_add"] == [
        {"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-b", "value": "2"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-c", "value": "3"}},  # APPEND_IF_EXISTS_OR_ADD is the default
    ]
    assert result["request_headers_to_remove"] == ["x-d"]
    assert result["response_headers_to_add"] == [{"header": {"key": "x-e", "value": "5"}}]
    assert result["response_headers_to_remove"] == ["server"]


def test_redirect() -> None:
    result = single(
        {
            "backends": [],
            "filters": {
                "redirect": {
                    "scheme": "https",
                    "hostname": "example.com",
                    "port": 8443,
                    "path": "/new",
                    "status_code": 307,
                }
            },
        }
    )
    assert "route" not in result
    assert result["redirect"] == {
        "scheme_redirect": "https",
        "host_redirect": "example.com",
        "port_redirect": 8443,
        "path_redirect": "/new",
        "response_code": "TEMPORARY_REDIRECT",
    }
    default_code = single({"backends": [], "filters": {"redirect": {"scheme": "https"}}})
    assert default_code["redirect"]["response_code"] == "FOUND"


def test_redirect_prefix() -> None:
    result = single(
        {
            "matches": [{"path": {"prefix": "/old"}}],
            "backends": [],
            "filters": {"redirect": {"prefix": "/new", "status_code": 301}},
        }
    )
    assert result["redirect"] == {"prefix_rewrite": "/new"}  # MOVED_PERMANENTLY is 0


def prefix_rewrite(matched: str, replacement: str) -> dict[str, Any]:
    result = action(
        {
            "matches": [{"path": {"prefix": matched}}],
            "filters": {"rewrite": {"prefix": replacement}},
        }
    )
    return {k: v for k, v in result.items() if k in ("prefix_rewrite", "regex_rewrite")}


def test_prefix_rewrites_keep_gateway_api_semantics() -> None:
    assert prefix_rewrite("/api", "/v2") == {"prefix_rewrite": "/v2"}
    assert prefix_rewrite("/api/", "/v2/") == {"prefix_rewrite": "/v2"}
    assert prefix_rewrite("/api", "/") == {
        "regex_rewrite": {"pattern": {"regex": "^/api/*"}, "substitution": "/"}
    }
    assert prefix_rewrite("/a.b", "/") == {
        "regex_rewrite": {"pattern": {"regex": r"^/a\.b/*"}, "substitution": "/"}
    }
    assert prefix_rewrite("/", "/v2") == {
        "regex_rewrite": {"pattern": {"regex": "^/"}, "substitution": "/v2/"}
    }
    assert prefix_rewrite("/", "/") == {}


def test_full_path_and_host_rewrite() -> None:
    result = action(
        {"filters": {"rewrite": {"full_path": "/item", "hostname": "internal.example"}}}
    )
    assert result["regex_rewrite"] == {"pattern": {"regex": "^/.*$"}, "substitution": "/item"}
    assert result["host_rewrite_literal"] == "internal.example"


def test_mirror() -> None:
    result = action({"filters": {"mirror": {"service": "shadow", "percent": 12.5}}})
    assert result["request_mirror_policies"] == [
        {
            "cluster": "shadow",
            "runtime_fraction": {"default_value": {"numerator": 125000, "denominator": "MILLION"}},
        }
    ]


def test_hash_policies_come_from_the_backend_service_policy() -> None:
    policy = doc(
        "ServicePolicy",
        "web",
        load_balancing={
            "policy": "ring_hash",
            "hash_policies": [
                {"header": "x-user"},
                {"cookie": {"name": "s", "ttl": "1h", "path": "/"}},
                {"source_ip": True},
            ],
            "terminal": True,
        },
    )
    result = action({"backends": [{"service": "web"}, {"service": "other"}]}, policy)
    assert result["hash_policy"] == [
        {"header": {"header_name": "x-user"}, "terminal": True},
        {"cookie": {"name": "s", "ttl": "3600s", "path": "/"}, "terminal": True},
        {"connection_properties": {"source_ip": True}, "terminal": True},
    ]
    assert "hash_policy" not in action({"backends": [{"service": "other"}]}, policy)


def test_header_values_are_literal() -> None:
    """Envoy would read ``%...%`` as a command operator; a stray ``%`` is a config error."""
    result = single({"filters": {"request_headers": {"set": {"x-a": "100%"}}}})
    assert result["request_headers_to_add"][0]["header"]["value"] == "100%%"
