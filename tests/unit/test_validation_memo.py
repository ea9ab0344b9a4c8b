"""Validation's memos change nothing: after any sequence of edits (routes, the listeners,
policies and service policies they name, the inventory), the report of a config reached by
edits (per-route problems reused by identity, the duplicate-match index updated) is the
report of the same config built fresh with the memos cleared, errors and warnings, order
and wording included; and the duplicate-match index says what a pass over the routes by
age says."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from xds_server.model import Endpoint, Inventory, Problem, Service
from xds_server.model.config import Entry, RawDocument
from xds_server.model.config_parser import ConfigParser
from xds_server.model.document import Kind
from xds_server.model.route import RouteSpec
from xds_server.model.validation import ValidationReport, clear_memos, validate_config
from xds_server.model.validation_matches import match_signature

ROUTES = tuple(f"r{i}" for i in range(5))
#: ``a`` and ``b`` are registry services (and so gRPC targets); ``c`` is not.
SERVICES = ("a", "b", "c")
HOSTNAMES = ("a", "b", "x.example.com", "*")
PROVIDER = {"name": "idp", "jwks": {"url": "https://idp.example.com/jwks.json"}}

#: The other documents an edit may put (by kind and name: a few specs each) or delete.
OTHERS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("Listener", "public"): [{"port": 8080}, {"port": 8080, "https_redirect": True}],
    ("Listener", "inner"): [{"port": 9000, "groups": ["inner"]}, {"port": 9001, "metrics": {}}],
    ("RetryPolicy", "default"): [{}, {"num_retries": 6}],
    ("AuthPolicy", "jwt"): [{"listeners": ["public"], "providers": [PROVIDER]}],
    ("RateLimitPolicy", "limit"): [{"listeners": ["inner"], "requests": 1}],
    ("ServicePolicy", "a"): [
        {"subsets": [{"name": "v1", "metadata": {"version": "v1"}}]},
        {
            "subsets": [
                {"name": "v1", "metadata": {"version": "v1"}},
                {"name": "v2", "metadata": {"version": "v2"}},
            ],
            "default_subset": "v2",
            "load_balancing": {"policy": "least_request"},
        },
    ],
}


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    match: dict[str, Any] = {"path": {"prefix": draw(st.sampled_from(["/", "/api", "/api/"]))}}
    if draw(st.booleans()):
        match["method"] = draw(st.sampled_from(["GET", "POST"]))
    rule: dict[str, Any] = {"matches": [match] * draw(st.integers(1, 2))}
    backends = []
    for service in draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=2, unique=True)):
        backend: dict[str, Any] = {"service": service}
        if draw(st.integers(0, 3)) == 0:
            backend["subset"] = draw(st.sampled_from(["v1", "v2", "v9"]))
        backends.append(backend)
    rule["backends"] = backends
    extra = draw(st.sampled_from(["none", "retry", "auth", "claims", "limit", "mirror"]))
    if extra == "retry":
        rule["retry"] = {"policy": draw(st.sampled_from(["default", "ghost"]))}
    elif extra == "auth":
        rule["auth"] = {"policy": draw(st.sampled_from(["jwt", "ghost"]))}
    elif extra == "claims":
        rule["auth"] = {"claims": [{"claim": "scope", "contains": "x"}]}
    elif extra == "limit":
        rule["rate_limit"] = {"policy": draw(st.sampled_from(["limit", "ghost"]))}
    elif extra == "mirror":
        rule["filters"] = {"mirror": {"service": draw(st.sampled_from(SERVICES))}}
    return rule


@st.composite
def route_specs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "listeners": draw(
            st.lists(
                st.sampled_from(["public", "inner", "ghost"]), min_size=1, max_size=2, unique=True
            )
        ),
        "hostnames": draw(
            st.lists(st.sampled_from(HOSTNAMES), min_size=1, max_size=2, unique=True)
        ),
        "rules": draw(st.lists(rules(), min_size=1, max_size=2)),
    }


route_edits = st.tuples(
    st.just("Route"), st.sampled_from(ROUTES), st.one_of(st.none(), route_specs())
)
other_edits = st.sampled_from(sorted(OTHERS)).flatmap(
    lambda key: st.tuples(
        st.just(key[0]), st.just(key[1]), st.one_of(st.none(), st.sampled_from(OTHERS[key]))
    )
)
#: An inventory edit: which services have instances, of which version, synced or not.
inventory_edits = st.tuples(
    st.just("Inventory"),
    st.sampled_from(["synced", "unsynced"]),
    st.dictionaries(st.sampled_from(SERVICES[:2]), st.sampled_from(["", "v1", "v2"])),
)
edits = st.lists(
    st.one_of(route_edits, route_edits, other_edits, inventory_edits), min_size=1, max_size=14
)


def inventory_of(synced: str, services: dict[str, str]) -> Inventory:
    return Inventory.of(
        {
            name: Service(
                name,
                (Endpoint("10.0.0.1", 80, metadata={"version": version} if version else {}),),
            )
            for name, version in services.items()
        },
        synced=synced == "synced",
    )


def states(sequence: list[tuple[Any, ...]]) -> list[tuple[list[RawDocument], Inventory]]:
    """The store's documents (ages as a store keeps them) and the inventory after each edit;
    the inventory is a new object only when an edit changes it."""
    documents: dict[tuple[str, str], tuple[dict[str, Any], int]] = {
        ("Listener", "public"): ({"port": 8080}, 1)
    }
    inventory = inventory_of("synced", {"a": "v1", "b": ""})
    result = []
    for revision, (kind, name, spec) in enumerate(sequence, start=2):
        if kind == "Inventory":
            inventory = inventory_of(name, spec)
        elif spec is None:
            documents.pop((kind, name), None)
        else:
            age = documents[kind, name][1] if (kind, name) in documents else revision
            documents[kind, name] = (spec, age)
        raw: list[RawDocument] = [(k, n, s, age) for (k, n), (s, age) in sorted(documents.items())]
        result.append((raw, inventory))
    return result


def duplicates_by_age(routes: dict[str, Entry[RouteSpec]]) -> list[Problem]:
    """The duplicate-match warnings as a pass over the routes by age finds them (what the
    check did before it kept an index)."""
    first_seen: dict[tuple[object, ...], str] = {}
    found = []
    for entry in sorted(routes.values(), key=lambda e: (e.created_revision, e.name)):
        spec = entry.spec
        for rule_index, rule in enumerate(spec.rules):
            for match_index, match in enumerate(rule.matches):
                where = f"route {entry.name!r} rules[{rule_index}]"
                for listener in spec.listeners:
                    for hostname in spec.hostnames:
                        key = (listener, hostname, *match_signature(match))
                        seen = first_seen.setdefault(key, where)
                        if seen != where:
                            found.append(
                                Problem(
                                    Kind.ROUTE.value,
                                    entry.name,
                                    f"spec.rules[{rule_index}].matches[{match_index}]",
                                    f"{seen} already has this match for {hostname!r} on "
                                    f"listener {listener!r}; this one is never used",
                                )
                            )
    return sorted(found)


def duplicate_warnings(report: ValidationReport) -> list[Problem]:
    return [p for p in report.warnings if p.reason.endswith("this one is never used")]


@settings(max_examples=30, deadline=None)
@given(edits)
def test_validation_after_edits_equals_validation_of_the_config_built_fresh(
    sequence: list[tuple[Any, ...]],
) -> None:
    parser = ConfigParser()
    clear_memos()
    warm = [
        (config, validate_config(config, inventory))
        for config, inventory in (
            (parser.parse(raw)[0], inventory) for raw, inventory in states(sequence)
        )
    ]
    for (config, report), (raw, inventory) in zip(warm, states(sequence), strict=True):
        clear_memos()
        fresh = validate_config(ConfigParser().parse(raw)[0], inventory)
        assert report.errors == fresh.errors
        assert report.warnings == fresh.warnings
        assert duplicate_warnings(report) == duplicates_by_age(dict(config.routes))


def test_an_unchanged_route_is_not_checked_again() -> None:
    """The memo is used (the property above would also pass without one): a route's
    problems are reused while its entry and every other kind are the same objects."""
    parser = ConfigParser()
    clear_memos()
    inventory = inventory_of("synced", {"a": "v1"})

    def route(name: str, service: str) -> RawDocument:
        spec = {"listeners": ["public"], "rules": [{"backends": [{"service": service}]}]}
        return ("Route", name, spec, 2)

    listener: RawDocument = ("Listener", "public", {"port": 8080}, 1)
    first = parser.config_of([listener, route("r0", "ghost"), route("r1", "a")])
    validate_config(first, inventory)
    second = parser.config_of([listener, route("r0", "ghost"), route("r1", "b")])
    assert second.routes["r0"] is first.routes["r0"]
    # A problem the checks would not find again: only a memo can report it for r0.
    marker = Problem("Route", "r0", "spec", "memoised")
    from xds_server.model import validation

    memo = validation._route_checks._memo
    assert memo is not None
    found = memo.found["r0"]
    validation._route_checks._memo = type(memo)(
        memo.context, {**memo.found, "r0": type(found)(found.entry, (), (marker,))}
    )
    warnings = validate_config(second, inventory).warnings
    assert marker in warnings
    assert [p.name for p in warnings if "no instances" in p.reason] == ["r1"]
