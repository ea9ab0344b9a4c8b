"""Hypothesis strategies for ``tcp``/``tls`` listeners with their ``TcpRoute``/``TlsRoute``s.

``config_strategies.documents()`` adds these to every config it draws, on ports its other
listeners do not use, so every field of the stream kinds goes through ``envoy --mode
validate``. (Self-contained: ``config_strategies`` imports this module.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from xds_server.model.duration import Duration

#: Exact names and wildcards, some nested in others (``*.example.com`` and
#: ``a.example.com`` may share a listener: Envoy picks the most specific).
SNI_HOSTNAMES = (
    "example.com",
    "*.example.com",
    "a.example.com",
    "*.a.example.com",
    "db.internal",
    "xn--bcher-kva.example",
)
STREAM_GROUPS = ("edge", "internal")


def _compact(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def stream_backends(draw: st.DrawFn, services: Sequence[str]) -> list[dict[str, Any]]:
    """One or more services, weights 0.. with at least one above 0 (weights may be left out)."""
    chosen = draw(st.lists(st.sampled_from(services), min_size=1, max_size=3, unique=True))
    backends = [
        _compact(service=service, weight=draw(_optional(st.integers(0, 1_000_000))))
        for service in chosen
    ]
    if all(backend.get("weight", 1) == 0 for backend in backends):
        backends[0]["weight"] = draw(st.integers(1, 1_000_000))
    return backends


def _route_options(draw: st.DrawFn) -> dict[str, Any]:
    return _compact(
        idle_timeout=draw(_optional(st.integers(0, 3_600_000).map(lambda ms: str(Duration(ms))))),
        access_log=draw(_optional(st.booleans())),
    )


def _listener(draw: st.DrawFn, protocol: str, port: int) -> dict[str, Any]:
    return _compact(
        address=draw(_optional(st.sampled_from(["0.0.0.0", "127.0.0.1", "::"]))),
        port=port,
        protocol=protocol,
        groups=draw(_optional(st.lists(st.sampled_from(STREAM_GROUPS), unique=True))),
        access_log=draw(_optional(st.booleans())),
    )


@st.composite
def stream_documents(
    draw: st.DrawFn, others: Sequence[dict[str, Any]], services: Sequence[str]
) -> list[dict[str, Any]]:
    """Beside the documents ``others``: maybe a ``tcp`` listener with its ``TcpRoute``; maybe
    ``tls`` listeners with ``TlsRoute``s whose server names are disjoint per listener;
    sometimes a stream listener with no route (not sent to Envoy). On ports ``others`` do
    not use; passthrough backends are services without upstream TLS (validation refuses
    those)."""
    taken_ports = {raw["spec"]["port"] for raw in others if raw["kind"] == "Listener"}
    upstream_tls = {
        raw["name"]
        for raw in others
        if raw["kind"] == "ServicePolicy" and raw["spec"].get("tls_policy") is not None
    }
    passthrough = [service for service in services if service not in upstream_tls]
    free = st.integers(1, 65535).filter(lambda port: port not in taken_ports)
    ports = draw(st.lists(free, min_size=3, max_size=3, unique=True))
    result: list[dict[str, Any]] = []
    if draw(st.booleans()):
        result.append(
            {"kind": "Listener", "name": "tcp0", "spec": _listener(draw, "tcp", ports[0])}
        )
        if draw(st.integers(0, 4)):
            spec = {"listeners": ["tcp0"], "backends": draw(stream_backends(services))}
            result.append(
                {"kind": "TcpRoute", "name": "tcp-r0", "spec": spec | _route_options(draw)}
            )
    tls_listeners = draw(st.lists(st.sampled_from(["tls0", "tls1"]), unique=True))
    for name, port in zip(tls_listeners, ports[1:], strict=False):
        result.append({"kind": "Listener", "name": name, "spec": _listener(draw, "tls", port)})
    if tls_listeners:
        # Each route takes a disjoint share of the names, so no listener sees one twice.
        names = draw(st.permutations(SNI_HOSTNAMES))
        cuts = sorted(draw(st.lists(st.integers(1, len(names) - 1), max_size=2, unique=True)))
        shares = [names[a:b] for a, b in zip([0, *cuts], [*cuts, len(names)], strict=True)]
        for index, share in enumerate(shares):
            hostnames = draw(st.lists(st.sampled_from(share), min_size=1, unique=True))
            spec = {
                "listeners": draw(
                    st.lists(st.sampled_from(tls_listeners), min_size=1, unique=True)
                ),
                "hostnames": hostnames,
                "backends": draw(stream_backends(passthrough)),
            }
            result.append(
                {"kind": "TlsRoute", "name": f"tls-r{index}", "spec": spec | _route_options(draw)}
            )
    return result
