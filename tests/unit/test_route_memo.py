"""Route translation's memos change nothing: after any sequence of route edits, what a warm
translation (virtual hosts and Envoy routes reused by identity, entries and mappings kept
by the config parser) gives is byte for byte what translating afresh gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from xds_server.model import Config, Endpoint, Inventory, Service
from xds_server.model.config import RawDocument
from xds_server.model.config_parser import ConfigParser
from xds_server.translate import hostnames, routes, translate

SERVICES = ("a", "b", "c", "d")
#: Exact names, wildcards covering some of them, and ``*`` covering all.
HOSTNAMES = ("a.example.com", "b.example.com", "x.a.example.com", "*.example.com", "*", "*.com")
ROUTES = tuple(f"r{i}" for i in range(6))
LISTENER = {"kind": "Listener", "name": "public", "spec": {"port": 8080}}


def inventory() -> Inventory:
    return Inventory.of({s: Service(s, (Endpoint("10.0.0.1", 80),)) for s in SERVICES})


@st.composite
def route_specs(draw: st.DrawFn) -> dict[str, Any]:
    rules = []
    for _ in range(draw(st.integers(1, 2))):
        prefix = draw(st.sampled_from(["/", "/api", "/api/v1", "/web"]))
        match: dict[str, Any] = {"path": {"prefix": prefix}}
        if draw(st.booleans()):
            match["method"] = "GET"
        rules.append(
            {
                "matches": [match],
                "backends": [{"service": draw(st.sampled_from(SERVICES))}],
                "timeouts": {"request": f"{draw(st.integers(1, 3))}s"},
            }
        )
    return {
        "listeners": ["public"],
        "hostnames": draw(
            st.lists(st.sampled_from(HOSTNAMES), min_size=1, max_size=2, unique=True)
        ),
        "rules": rules,
    }


#: One edit: put route ``name`` with this spec (or delete it: ``None``).
edits = st.lists(
    st.tuples(st.sampled_from(ROUTES), st.one_of(st.none(), route_specs())),
    min_size=1,
    max_size=12,
)


def serialised(config: Config) -> list[bytes]:
    resources = translate(inventory(), config).default
    return [m.SerializeToString(deterministic=True) for m in resources.messages()]


def states(sequence: list[tuple[str, dict[str, Any] | None]]) -> list[list[tuple[Any, ...]]]:
    """The store's documents after each edit, ages as a store would keep them."""
    documents: dict[str, tuple[dict[str, Any], int]] = {}
    result = []
    for revision, (name, spec) in enumerate(sequence, start=2):
        if spec is None:
            documents.pop(name, None)
        else:
            age = documents[name][1] if name in documents else revision
            documents[name] = (spec, age)
        result.append(
            [("Listener", "public", LISTENER["spec"], 1)]
            + [("Route", n, s, age) for n, (s, age) in sorted(documents.items())]
        )
    return result


@settings(max_examples=30, deadline=None)
@given(edits)
def test_memoised_route_translation_equals_a_fresh_one(
    sequence: list[tuple[str, dict[str, Any] | None]],
) -> None:
    parser = ConfigParser()
    routes.clear_caches()
    warm = [serialised(parser.config_of(state)) for state in states(sequence)]
    for state, expected in zip(states(sequence), warm, strict=True):
        routes.clear_caches()
        hostnames.covering.cache_clear()
        assert serialised(Config.from_documents(state)) == expected


def test_an_unchanged_virtual_host_is_reused_and_a_changed_one_rebuilt() -> None:
    """The memo is used (the property above would also pass without one)."""
    routes.clear_caches()
    parser = ConfigParser()

    def route(name: str, host: str, timeout: str) -> RawDocument:
        spec = {
            "listeners": ["public"],
            "hostnames": [host],
            "rules": [{"backends": [{"service": "a"}], "timeouts": {"request": timeout}}],
        }
        return ("Route", name, spec, 2)

    listener: RawDocument = ("Listener", "public", {"port": 8080}, 1)
    first = parser.config_of(
        [listener, route("r0", "a.example.com", "1s"), route("r1", "b.example.com", "1s")]
    )
    before = dict(routes._virtual_hosts)
    translate(inventory(), first)
    built = routes._virtual_hosts["public"]
    assert "public" not in before
    second = parser.config_of(
        [listener, route("r0", "a.example.com", "2s"), route("r1", "b.example.com", "1s")]
    )
    assert second.routes["r1"] is first.routes["r1"]
    assert second.routes is not first.routes
    translate(inventory(), second)
    rebuilt = routes._virtual_hosts["public"]
    assert rebuilt["b.example.com"] is built["b.example.com"]
    assert rebuilt["a.example.com"] is not built["a.example.com"]
