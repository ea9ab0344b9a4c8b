"""Hypothesis strategies for a rule's HTTP features: gRPC matches, WebSocket upgrades,
CORS, fault injection and ``timeouts.grpc_max`` (hooked into ``config_strategies.rules``).

Self-contained (``config_strategies`` imports this module, not the other way round).
"""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

from xds_server.model.duration import Duration
from xds_server.model.regex import re2_error

_IDENTIFIER = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True)
_TOKEN = string.ascii_letters + string.digits + "!#$%&'*+.^_`|~-"
_ORIGIN_CHARS = "".join(map(chr, range(0x21, 0x7F)))
_header_names = st.text(_TOKEN, min_size=1, max_size=12).filter(lambda n: n.lower() != "host")
_percents = st.one_of(st.sampled_from([0.0, 50.0, 100.0]), st.floats(0, 100, allow_nan=False))
_origin_regexes = st.one_of(
    st.sampled_from([r"https://.*\.example\.com", "https?://[a-z]+", ".*"]),
    st.text("ab:/.-*+?|()[]", min_size=1, max_size=12).filter(lambda r: re2_error(r) is None),
)


def _durations(min_ms: int, max_ms: int) -> st.SearchStrategy[str]:
    return st.integers(min_ms, max_ms).map(lambda ms: str(Duration(ms)))


grpc_services = st.lists(_IDENTIFIER, min_size=1, max_size=3).map(".".join)


def grpc_matches(prefix_only: bool) -> st.SearchStrategy[dict[str, Any]]:
    """A match on a gRPC service (a path prefix) or, unless ``prefix_only``, one method."""
    grpc = st.fixed_dictionaries(
        {"service": grpc_services}, optional={} if prefix_only else {"method": _IDENTIFIER}
    )
    return st.fixed_dictionaries(
        {"grpc": grpc},
        optional={"method": st.sampled_from(["GET", "POST"])},
    )


_origins = st.one_of(
    st.fixed_dictionaries({"exact": st.text(_ORIGIN_CHARS, min_size=1, max_size=16)}),
    st.fixed_dictionaries({"prefix": st.text(_ORIGIN_CHARS, min_size=1, max_size=16)}),
    st.fixed_dictionaries({"regex": _origin_regexes}),
)
cors = st.fixed_dictionaries(
    {"allow_origins": st.lists(_origins, min_size=1, max_size=3)},
    optional={
        "allow_methods": st.lists(
            st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
            unique=True,
            max_size=3,
        ),
        "allow_headers": st.lists(_header_names, max_size=2),
        "expose_headers": st.lists(_header_names, max_size=2),
        "allow_credentials": st.booleans(),
        "max_age": _durations(0, 86_400_000),
    },
)

_abort = st.one_of(
    st.fixed_dictionaries({"http_status": st.integers(200, 599)}),
    st.fixed_dictionaries({"grpc_status": st.integers(0, 16)}),
).flatmap(
    lambda status: st.fixed_dictionaries({}, optional={"percent": _percents}).map(
        lambda extra: {**status, **extra}
    )
)
faults = st.fixed_dictionaries(
    {},
    optional={
        "delay": st.fixed_dictionaries(
            {"duration": _durations(1, 600_000)}, optional={"percent": _percents}
        ),
        "abort": _abort,
        "header": st.fixed_dictionaries(
            {"name": _header_names},
            optional={"exact": st.text(string.ascii_letters + string.digits, max_size=8)},
        ),
    },
).filter(lambda fault: "delay" in fault or "abort" in fault)

listener_upgrades = st.lists(st.just("websocket"), max_size=1)


@st.composite
def add_http_features(draw: st.DrawFn, rule: dict[str, Any], redirect: bool) -> dict[str, Any]:
    """``rule`` with, maybe, CORS, a fault, upgrades and (forwarding rules) ``grpc_max``."""
    result = dict(rule)
    if draw(st.booleans()):
        result["filters"] = {**result.get("filters", {}), "cors": draw(cors)}
    if draw(st.booleans()):
        result["fault"] = draw(faults)
    if redirect:
        return result
    if draw(st.booleans()):
        result["upgrades"] = ["websocket"]
    if draw(st.booleans()):
        result["timeouts"] = {**result.get("timeouts", {}), "grpc_max": draw(_durations(0, 60_000))}
    return result
