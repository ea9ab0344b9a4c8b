"""Hypothesis strategies for valid operator configs and inventories.

They draw raw documents (what an operator would send) from every field of every kind, so a
property over them covers the model's whole accepted space, not a hand-picked corner.
"""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

from xds_server.model import Endpoint, Health, Inventory, Service
from xds_server.model.duration import Duration
from xds_server.model.regex import re2_error
from xds_server.model.retry import RetryOn

SERVICES = ("api", "api-v2", "web", "Catalog.v1", "shadow_2")
HOSTNAMES = ("*", "example.com", "*.example.com", "a.example.com", "b.a.example.com", "10.0.0.1")
GROUPS = ("edge", "internal")
TOKEN = string.ascii_letters + string.digits + "!#$%&'*+.^_`|~-"
PATH_CHARS = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in "?#\\")
REGEX_CHARS = "ab/.-()[]*+?|^$\\{},0123456789dws"
KNOWN_REGEXES = ("/items/[0-9]+", "^/a(b|c)*$", r"/\d{1,3}/.*", "(?i)/case", r"\pL+", ".*")


def durations(min_ms: int = 0, max_ms: int = 3_600_000) -> st.SearchStrategy[str]:
    return st.integers(min_ms, max_ms).map(lambda ms: str(Duration(ms)))


positive_durations = durations(min_ms=1)
header_names = st.text(TOKEN, min_size=1, max_size=12).filter(lambda n: n.lower() != "host")
header_values = st.text(
    st.characters(blacklist_characters="\x00\r\n", blacklist_categories=["Cs"]), max_size=16
)
paths = st.text(PATH_CHARS, max_size=16).map(lambda tail: "/" + tail)
regexes = st.one_of(
    st.sampled_from(KNOWN_REGEXES),
    st.text(REGEX_CHARS, min_size=1, max_size=12).filter(lambda r: re2_error(r) is None),
)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def compact(**fields: Any) -> dict[str, Any]:
    """Drop the fields drawn as ``None``: as if the operator left them out."""
    return {key: value for key, value in fields.items() if value is not None}


@st.composite
def one_of_fields(draw: st.DrawFn, /, **choices: st.SearchStrategy[Any]) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(choices)))
    return {name: draw(choices[name])}


# -- RetryPolicy ---------------------------------------------------------------------------


@st.composite
def retry_specs(draw: st.DrawFn) -> dict[str, Any]:
    backoff = draw(optional(st.tuples(st.integers(1, 5_000), optional(st.integers(1, 10)))))
    return compact(
        retry_on=draw(
            optional(st.lists(st.sampled_from([c.value for c in RetryOn]), min_size=1, max_size=4))
        ),
        num_retries=draw(optional(st.integers(0, 10))),
        per_try_timeout=draw(optional(durations())),
        backoff=None
        if backoff is None
        else compact(
            base_interval=str(Duration(backoff[0])),
            max_interval=None if backoff[1] is None else str(Duration(backoff[0] * backoff[1])),
        ),
        retriable_status_codes=draw(optional(st.lists(st.integers(100, 599), max_size=3))),
        retry_host_other=draw(optional(st.booleans())),
        rate_limited_backoff=draw(
            optional(
                st.fixed_dictionaries(
                    {
                        "reset_headers": st.lists(
                            st.fixed_dictionaries(
                                {"name": header_names},
                                optional={"format": st.sampled_from(["seconds", "unix_timestamp"])},
                            ),
                            min_size=1,
                            max_size=2,
                        )
                    },
                    optional={"max_interval": positive_durations},
                )
            )
        ),
    )


# -- ServicePolicy -------------------------------------------------------------------------

hash_policies = st.one_of(
    st.fixed_dictionaries({"header": header_names}),
    st.fixed_dictionaries(
        {
            "cookie": st.fixed_dictionaries(
                {"name": st.text(TOKEN, min_size=1, max_size=8)},
                optional={"ttl": durations(), "path": paths},
            )
        }
    ),
    st.just({"source_ip": True}),
)
status_ranges = st.one_of(
    st.integers(100, 599),
    st.tuples(st.integers(100, 599), st.integers(0, 99)).map(
        lambda r: f"{r[0]}-{min(599, r[0] + r[1])}"
    ),
)


@st.composite
def service_policy_specs(draw: st.DrawFn) -> dict[str, Any]:
    policy = draw(
        st.sampled_from(["round_robin", "least_request", "ring_hash", "maglev", "random"])
    )
    hashing = policy in ("ring_hash", "maglev")
    counts = st.integers(0, 2**32 - 1)
    return compact(
        load_balancing=compact(
            policy=policy,
            hash_policies=draw(st.lists(hash_policies, max_size=3)) if hashing else None,
            terminal=draw(optional(st.booleans())),
        ),
        connect_timeout=draw(optional(positive_durations)),
        circuit_breakers=draw(
            optional(
                st.fixed_dictionaries(
                    {},
                    optional={
                        key: counts
                        for key in (
                            "max_connections",
                            "max_pending_requests",
                            "max_requests",
                            "max_retries",
                        )
                    },
                )
            )
        ),
        outlier_detection=draw(
            optional(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "consecutive_5xx": counts,
                        "interval": positive_durations,
                        "base_ejection_time": positive_durations,
                        "max_ejection_percent": st.integers(0, 100),
                    },
                )
            )
        ),
        health_check=draw(
            optional(
                st.fixed_dictionaries(
                    {"path": paths},
                    optional={
                        "interval": positive_durations,
                        "timeout": positive_durations,
                        "unhealthy_threshold": st.integers(1, 10),
                        "healthy_threshold": st.integers(1, 10),
                        "expected_statuses": st.lists(status_ranges, max_size=3),
                        "host": st.sampled_from(HOSTNAMES[1:]).filter(lambda h: "*" not in h),
                    },
                )
            )
        ),
        protocol=draw(optional(st.sampled_from(["http1", "http2", "grpc"]))),
    )


# -- Listener ------------------------------------------------------------------------------


def listener_spec(port: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"port": st.just(port)},
        optional={
            "address": st.sampled_from(["0.0.0.0", "127.0.0.1", "::", "::1"]),
            "protocol": st.just("http"),
            "groups": st.lists(st.sampled_from(GROUPS), unique=True, max_size=2),
            "access_log": st.booleans(),
            "http": st.fixed_dictionaries(
                {},
                optional={
                    "idle_timeout": durations(),
                    "max_request_headers_kb": st.integers(1, 8192),
                    "use_remote_address": st.booleans(),
                    "xff_num_trusted_hops": st.integers(0, 10),
                },
            ),
        },
    )


# -- Route ---------------------------------------------------------------------------------


header_matches = st.builds(
    lambda name, kind, invert: {"name": name, **kind, **({"invert": True} if invert else {})},
    st.one_of(header_names, st.sampled_from([":authority", ":path"])),
    one_of_fields(
        exact=header_values,
        prefix=header_values.filter(bool),
        regex=regexes,
        present=st.just(True),
    ),
    st.booleans(),
)
query_matches = st.builds(
    lambda name, kind: {"name": name, **kind},
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=8),
    one_of_fields(exact=st.text(max_size=8), regex=regexes, present=st.just(True)),
)


def matches(prefix_only: bool) -> st.SearchStrategy[dict[str, Any]]:
    path = (
        st.fixed_dictionaries({"prefix": paths})
        if prefix_only
        else one_of_fields(exact=paths, prefix=paths, regex=regexes)
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "path": path,
            "headers": st.lists(header_matches, max_size=3),
            "query_params": st.lists(query_matches, max_size=2),
            "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        },
    )


header_mutations = st.builds(
    lambda set_, add, remove: compact(
        set=set_ or None,
        add={k: v for k, v in add.items() if k.lower() not in {s.lower() for s in set_}} or None,
        remove=[r for r in remove if r.lower() not in {k.lower() for k in [*set_, *add]}] or None,
    ),
    st.dictionaries(header_names, header_values, max_size=2),
    st.dictionaries(header_names, header_values, max_size=2),
    st.lists(header_names, max_size=2),
).filter(
    lambda m: (
        len({k.lower() for k in [*m.get("set", {}), *m.get("add", {})]})
        == len([*m.get("set", {}), *m.get("add", {})])
        and len({r.lower() for r in m.get("remove", [])}) == len(m.get("remove", []))
    )
)


@st.composite
def rules(draw: st.DrawFn, retry_policy_names: list[str]) -> dict[str, Any]:
    redirect = draw(st.booleans()) and draw(st.booleans())
    prefix_only = draw(st.booleans())
    rule: dict[str, Any] = {"matches": draw(st.lists(matches(prefix_only), max_size=2))}
    filters: dict[str, Any] = compact(
        request_headers=draw(optional(header_mutations)),
        response_headers=draw(optional(header_mutations)),
    )
    if redirect:
        filters["redirect"] = compact(
            scheme=draw(optional(st.sampled_from(["http", "https"]))),
            hostname=draw(optional(st.sampled_from(["example.com", "a.example.com"]))),
            port=draw(optional(st.integers(1, 65535))),
            status_code=draw(optional(st.sampled_from([301, 302, 303, 307, 308]))),
            **draw(
                st.one_of(
                    st.just({}),
                    st.fixed_dictionaries({"path": paths}),
                    *([st.fixed_dictionaries({"prefix": paths})] if prefix_only else []),
                )
            ),
        )
        rule["filters"] = filters
        return rule
    services = draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=3, unique=True))
    weights = draw(
        st.lists(st.integers(0, 1_000_000), min_size=len(services), max_size=len(services))
    )
    if sum(weights) == 0:
        weights[0] = 1
    rule["backends"] = [{"service": s, "weight": w} for s, w in zip(services, weights, strict=True)]
    rewrite = draw(
        optional(
            st.fixed_dictionaries(
                {},
                optional={
                    "hostname": st.sampled_from(["example.com", "internal.example.com"]),
                    **({"prefix": paths} if prefix_only else {"full_path": paths}),
                },
            ).filter(bool)
        )
    )
    if rewrite:
        filters["rewrite"] = rewrite
    mirror = draw(
        optional(
            st.fixed_dictionaries(
                {"service": st.sampled_from(SERVICES)},
                optional={"percent": st.floats(0, 100, allow_nan=False)},
            )
        )
    )
    if mirror:
        filters["mirror"] = mirror
    if filters:
        rule["filters"] = filters
    request = draw(optional(st.integers(0, 600_000)))
    per_try = draw(optional(st.integers(0, request if request else 600_000)))
    timeouts = compact(
        request=None if request is None else str(Duration(request)),
        per_try=None if per_try is None else str(Duration(per_try)),
        idle=draw(optional(durations())),
    )
    if timeouts:
        rule["timeouts"] = timeouts
    retry_choices: list[st.SearchStrategy[Any]] = [st.none(), retry_specs()]
    if retry_policy_names:
        retry_choices.append(st.sampled_from(retry_policy_names).map(lambda n: {"policy": n}))
    retry = draw(st.one_of(*retry_choices))
    if retry is not None:
        rule["retry"] = retry
    return rule


# -- The whole thing -----------------------------------------------------------------------


@st.composite
def documents(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A list of raw documents that together make a valid config."""
    listener_names = draw(st.lists(st.sampled_from(["l0", "l1", "l2"]), min_size=1, unique=True))
    ports = draw(
        st.lists(
            st.integers(1, 65535),
            min_size=len(listener_names),
            max_size=len(listener_names),
            unique=True,
        )
    )
    result = [
        {"kind": "Listener", "name": name, "spec": draw(listener_spec(port))}
        for name, port in zip(listener_names, ports, strict=True)
    ]
    policy_names = draw(st.lists(st.sampled_from(["default", "fast"]), unique=True))
    result += [
        {"kind": "RetryPolicy", "name": name, "spec": draw(retry_specs())} for name in policy_names
    ]
    for service in draw(st.lists(st.sampled_from(SERVICES), unique=True, max_size=3)):
        name = service.lower().replace(".", "-").replace("_", "-")
        if name == service:  # a ServicePolicy's name is the service: a DNS label
            result.append(
                {"kind": "ServicePolicy", "name": name, "spec": draw(service_policy_specs())}
            )
    for index in range(draw(st.integers(1, 3))):
        result.append(
            {
                "kind": "Route",
                "name": f"r{index}",
                "spec": compact(
                    listeners=draw(
                        st.lists(st.sampled_from(listener_names), min_size=1, unique=True)
                    ),
                    hostnames=draw(
                        optional(st.lists(st.sampled_from(HOSTNAMES), min_size=1, unique=True))
                    ),
                    rules=draw(st.lists(rules(policy_names), min_size=1, max_size=3)),
                ),
            }
        )
    return result


endpoints = st.builds(
    Endpoint,
    address=st.one_of(
        st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), st.just("web.internal")
    ),
    port=st.integers(0, 65535),
    weight=st.integers(0, 100_000),
    health=st.sampled_from(list(Health)),
    zone=st.sampled_from(["", "a", "b"]),
    region=st.sampled_from(["", "eu"]),
    priority=st.integers(0, 3),
    metadata=st.one_of(
        st.just({}),
        st.just({"version": "v2", "consul": {"tags": ["a", "b"], "n": 1}}),
    ),
)


@st.composite
def inventories(draw: st.DrawFn) -> Inventory:
    services = {}
    for name in draw(st.lists(st.sampled_from(SERVICES), unique=True)):
        services[name] = Service(name, tuple(draw(st.lists(endpoints, max_size=3))))
    return Inventory.of(services)
