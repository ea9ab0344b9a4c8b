"""Hypothesis strategies for ``ServicePolicy`` subsets and slow start, and route backends
naming those subsets.

``config_strategies.documents()`` passes every config it draws through ``with_subsets``, so
subset clusters, their assignments (fallback priorities included) and slow start go
through ``envoy --mode validate``. Subsets go only on services without a mesh ``Sidecar``
(validation refuses subsets on mesh services, and the mesh strategies may add sidecars for
``MESH_SERVICES``). (Self-contained: ``config_strategies`` imports this module.)
"""

from __future__ import annotations

from typing import Any, Final

from hypothesis import strategies as st

#: Services that may get a Sidecar in the mesh strategies (kept in step by hand).
MESH_SERVICES: Final = frozenset({"api", "web", "billing", "db"})
#: A service of ``config_strategies.SERVICES`` no sidecar fronts, and a DNS label.
SUBSET_SERVICE: Final = "api-v2"
SUBSET_NAMES: Final = ("v1", "v2", "canary")
TAGS: Final = ("v1", "v2", "canary", "a", "b")

labels = st.dictionaries(
    st.sampled_from(["version", "team", "rack"]),
    st.sampled_from(["v1", "v2", "1", "r1"]),
    max_size=2,
)


@st.composite
def subset_specs(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """One subset: at least one of tags, metadata, node_metadata."""
    spec: dict[str, Any] = {"name": name}
    while len(spec) == 1:
        if tags := draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)):
            spec["tags"] = tags
        if metadata := draw(labels):
            spec["metadata"] = metadata
        if node_metadata := draw(labels):
            spec["node_metadata"] = node_metadata
    if draw(st.booleans()):
        spec["only_passing"] = draw(st.booleans())
    return spec


@st.composite
def subset_fields(draw: st.DrawFn) -> dict[str, Any]:
    """``subsets`` (1-3, unique names) and sometimes a ``default_subset`` among them."""
    names = draw(st.lists(st.sampled_from(SUBSET_NAMES), min_size=1, unique=True))
    fields: dict[str, Any] = {"subsets": [draw(subset_specs(name)) for name in names]}
    if draw(st.booleans()):
        fields["default_subset"] = draw(st.sampled_from(names))
    return fields


@st.composite
def slow_start(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "slow_start_window": f"{draw(st.integers(1, 600_000))}ms",
    }
    if draw(st.booleans()):
        fields["aggression"] = draw(st.floats(0.01, 100, allow_nan=False))
    return fields


@st.composite
def with_subsets(draw: st.DrawFn, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``documents`` with subsets on some non-mesh services' policies (a policy for
    ``SUBSET_SERVICE`` added sometimes), slow start on some round robin and least request
    policies, and subsets named by some backends of edge routes."""
    result = [dict(document) for document in documents]
    policies = {d["name"]: d for d in result if d["kind"] == "ServicePolicy"}
    if SUBSET_SERVICE not in policies and draw(st.booleans()):
        added = {"kind": "ServicePolicy", "name": SUBSET_SERVICE, "spec": {}}
        policies[SUBSET_SERVICE] = added
        result.append(added)
    defined: dict[str, list[str]] = {}
    for name, document in policies.items():
        spec = document["spec"] = dict(document["spec"])
        balancing = dict(spec.get("load_balancing", {}))
        if balancing.get("policy", "round_robin") in ("round_robin", "least_request") and draw(
            st.booleans()
        ):
            spec["load_balancing"] = {**balancing, **draw(slow_start())}
        if name not in MESH_SERVICES and (name == SUBSET_SERVICE or draw(st.booleans())):
            spec.update(draw(subset_fields()))
            defined[name] = [subset["name"] for subset in spec["subsets"]]
    for document in result:
        if document["kind"] != "Route" or not document["spec"].get("listeners"):
            continue
        spec = document["spec"] = dict(document["spec"])
        rules = []
        for rule in spec["rules"]:
            backends = []
            for backend in rule.get("backends", ()):
                names = defined.get(backend["service"])
                if names and draw(st.integers(0, 3)) > 0:
                    backend = {**backend, "subset": draw(st.sampled_from(names))}
                backends.append(backend)
            rules.append({**rule, "backends": backends} if "backends" in rule else rule)
        spec["rules"] = rules
    return result
