"""Gateway API precedence (see ``xds_server.translate.precedence`` for the documented order)."""

from __future__ import annotations

from typing import Any

from tests.unit.model_builders import config_of, listener, route
from tests.unit.translate_helpers import routes_of
from xds_server.model import Config


def rule(match: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"matches": [match] if match is not None else [], "backends": [{"service": "web"}]}


def order(config: Config, host: str = "*") -> list[str]:
    return [r["name"] for r in routes_of(config)[host]]


def one_route(*matches: dict[str, Any] | None) -> list[str]:
    """Each match in its own rule of one route, listed in reverse of the expected order."""
    return order(config_of(listener(), route("r", rules=[rule(m) for m in matches])))


def test_path_kinds() -> None:
    assert one_route(
        None,  # catch-all: last
        {"path": {"prefix": "/"}},
        {"path": {"regex": "/a.*"}},
        {"path": {"prefix": "/a"}},
        {"path": {"prefix": "/a/b"}},
        {"path": {"exact": "/a/b/c"}},
    ) == [
        "r.rules[5].matches[0]",  # exact
        "r.rules[4].matches[0]",  # longest prefix
        "r.rules[3].matches[0]",  # shorter prefix
        "r.rules[2].matches[0]",  # regex: after prefixes, before the catch-all
        "r.rules[0].matches[0]",  # no path = prefix /, rule order breaks the tie
        "r.rules[1].matches[0]",
    ]


def test_trailing_slash_does_not_make_a_prefix_longer() -> None:
    assert one_route({"path": {"prefix": "/api/"}}, {"path": {"prefix": "/api"}}) == [
        "r.rules[0].matches[0]",
        "r.rules[1].matches[0]",
    ]


def test_method_then_headers_then_query_params() -> None:
    assert one_route(
        {"path": {"prefix": "/a"}},
        {"path": {"prefix": "/a"}, "query_params": [{"name": "q", "present": True}]},
        {"path": {"prefix": "/a"}, "headers": [{"name": "x", "present": True}]},
        {
            "path": {"prefix": "/a"},
            "headers": [{"name": "x", "present": True}, {"name": "y", "present": True}],
        },
        {"path": {"prefix": "/a"}, "method": "GET"},
    ) == [
        "r.rules[4].matches[0]",
        "r.rules[3].matches[0]",
        "r.rules[2].matches[0]",
        "r.rules[1].matches[0]",
        "r.rules[0].matches[0]",
    ]


def test_path_beats_method() -> None:
    assert one_route({"method": "GET"}, {"path": {"prefix": "/a"}}) == [
        "r.rules[1].matches[0]",
        "r.rules[0].matches[0]",
    ]


def test_older_route_then_name_break_ties() -> None:
    config = config_of(
        listener(),
        route("zeta", rules=[rule()]),  # revision 2: oldest
        route("beta", rules=[rule()]),  # revision 3
    )
    assert order(config) == ["zeta.rules[0].matches[0]", "beta.rules[0].matches[0]"]
    same_age = Config.from_documents(
        [
            ("Listener", "public", listener()["spec"], 1),
            ("Route", "zeta", route("zeta")["spec"], 5),
            ("Route", "beta", route("beta")["spec"], 5),
        ]
    )
    assert order(same_age) == ["beta.rules[0].matches[0]", "zeta.rules[0].matches[0]"]


def test_more_specific_hostname_wins_over_better_path() -> None:
    config = config_of(
        listener(),
        route("wild", hostnames=["*.example.com"], rules=[rule({"path": {"exact": "/a"}})]),
        route("exact", hostnames=["a.example.com"], rules=[rule()]),
    )
    assert order(config, "a.example.com") == [
        "exact.rules[0].matches[0]",
        "wild.rules[0].matches[0]",
    ]


def test_matches_of_one_rule_are_ranked_separately() -> None:
    config = config_of(
        listener(),
        route(
            "a",
            rules=[
                {
                    "matches": [{"path": {"prefix": "/x"}}, {"path": {"exact": "/y"}}],
                    "backends": [{"service": "web"}],
                }
            ],
        ),
        route("b", rules=[rule({"path": {"prefix": "/x/longer"}})]),
    )
    assert order(config) == [
        "a.rules[0].matches[1]",
        "b.rules[0].matches[0]",
        "a.rules[0].matches[0]",
    ]
