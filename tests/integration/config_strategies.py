"""Hypothesis strategies for valid operator configs and inventories.

They draw raw documents (what an operator would send) from every field of every kind, so a
property over them covers the model's whole accepted space, not a hand-picked corner.
"""

from __future__ import annotations

import atexit
import datetime
import shutil
import string
import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from tests.integration.strategies_http import add_http_features, grpc_matches, listener_upgrades
from tests.integration.strategies_streams import stream_documents
from tests.integration.strategies_subsets import with_subsets
from xds_server.model import Endpoint, Health, Inventory, Service
from xds_server.model.duration import Duration
from xds_server.model.mesh import spiffe_id
from xds_server.model.regex import re2_error
from xds_server.model.retry import RetryOn
from xds_server.model.tls import CIPHER_SUITES
from xds_server.model.workload import Identities, WorkloadIdentity

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
def service_policy_specs(draw: st.DrawFn, tls_policies: tuple[str, ...] = ()) -> dict[str, Any]:
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
        tls_policy=draw(optional(st.sampled_from(tls_policies))) if tls_policies else None,
    )


# -- Listener ------------------------------------------------------------------------------


@st.composite
def listener_spec(draw: st.DrawFn, port: int, tls_policies: tuple[str, ...] = ()) -> dict[str, Any]:
    spec = draw(plain_listener_spec(port))
    choices = ["plain", "redirect", *(["https", "https"] if tls_policies else [])]
    choice = draw(st.sampled_from(choices))
    if choice == "https":
        spec.update(protocol="https", tls_policy=draw(st.sampled_from(tls_policies)))
    elif choice == "redirect":
        spec["https_redirect"] = True
        port_redirect = draw(optional(st.integers(1, 65535)))
        if port_redirect is not None:
            spec["https_redirect_port"] = port_redirect
    return spec


def plain_listener_spec(port: int) -> st.SearchStrategy[dict[str, Any]]:
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
                    "upgrades": listener_upgrades,
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
    match = st.one_of(matches(prefix_only), grpc_matches(prefix_only))
    rule: dict[str, Any] = {"matches": draw(st.lists(match, max_size=2))}
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
        return draw(add_http_features(rule, True))
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
    return draw(add_http_features(rule, False))


# -- Certificate and TlsPolicy -------------------------------------------------------------

KEY_PAIRS = ("tls-rsa", "tls-ecdsa", "tls-file")
CA_BUNDLES = ("tls-ca", "tls-ca-file")
SERVER_NAMES = ("shop.example.com", "*.shop.example.com", "api.example.com", "x.y.example.com")
VERSIONS = ("1.0", "1.1", "1.2", "1.3")


@cache
def tls_material() -> dict[str, dict[str, Any]]:
    """The specs of the ``Certificate`` documents, made once per session (test certificates
    from ``trustme``; the file-based ones in a temporary directory removed at exit)."""
    from tests.support.pki import ECDSA, TestCa

    ca = TestCa()
    rsa, ecdsa = ca.issue("shop.example.com"), ca.issue("shop.example.com", key_type=ECDSA)
    directory = Path(tempfile.mkdtemp(prefix="xds-tls-strategies-"))
    atexit.register(shutil.rmtree, directory, True)
    chain, key = ca.issue("file.example.com").write(directory, "file")
    (directory / "ca.pem").write_text(ca.pem)
    return {
        "tls-rsa": {"certificate": rsa.chain, "private_key": rsa.key},
        "tls-ecdsa": {"certificate": ecdsa.chain, "private_key": ecdsa.key},
        "tls-file": {"certificate_file": str(chain), "private_key_file": str(key)},
        "tls-ca": {"ca_bundle": ca.pem},
        "tls-ca-file": {"ca_bundle_file": str(directory / "ca.pem")},
    }


san_matchers = st.builds(
    lambda kind, match: {"type": kind, **match},
    st.sampled_from(["dns", "uri", "email", "ip"]),
    one_of_fields(
        exact=st.sampled_from(["a.example.com", "spiffe://example.org/a", "10.0.0.1"]),
        prefix=st.sampled_from(["spiffe://example.org/", "a"]),
        suffix=st.sampled_from([".example.com", "@example.com"]),
    ),
)


@st.composite
def tls_parameters(draw: st.DrawFn) -> dict[str, Any]:
    low, high = sorted(draw(st.lists(st.sampled_from(VERSIONS), min_size=2, max_size=2)))
    ciphers = None
    if low != "1.3":
        ciphers = draw(
            optional(st.lists(st.sampled_from(CIPHER_SUITES), min_size=1, max_size=4, unique=True))
        )
    return compact(
        min_version=draw(optional(st.just(low))),
        max_version=draw(optional(st.just(high))),
        cipher_suites=ciphers,
    )


def _versions_ok(spec: dict[str, Any]) -> bool:
    """Defaults (1.2 and 1.3) fill what was left out; keep only ranges with min <= max."""
    low = spec.get("min_version", "1.2")
    high = spec.get("max_version", "1.3")
    return VERSIONS.index(low) <= VERSIONS.index(high) and not (
        low == "1.3" and spec.get("cipher_suites")
    )


@st.composite
def downstream_specs(draw: st.DrawFn) -> dict[str, Any]:
    certificates = draw(st.lists(st.sampled_from(KEY_PAIRS), unique=True, max_size=3))
    names = draw(st.lists(st.sampled_from(SERVER_NAMES), unique=True, max_size=3))
    sni = [
        {
            "server_names": [name],
            "certificates": draw(
                st.lists(st.sampled_from(KEY_PAIRS), min_size=1, max_size=2, unique=True)
            ),
        }
        for name in names
    ]
    if not certificates and not sni:
        certificates = [draw(st.sampled_from(KEY_PAIRS))]
    client = draw(
        optional(
            st.fixed_dictionaries(
                {"ca": st.sampled_from(CA_BUNDLES)},
                optional={
                    "required": st.booleans(),
                    "subject_alt_names": st.lists(san_matchers, max_size=2),
                    "forward_details": st.lists(
                        st.sampled_from(["subject", "uri", "dns", "cert", "chain"]), unique=True
                    ),
                },
            )
        )
    )
    return compact(
        certificates=certificates or None,
        sni=sni or None,
        alpn=draw(optional(st.lists(st.sampled_from(["h2", "http/1.1"]), unique=True))),
        client_certificate=client,
        **draw(tls_parameters().filter(_versions_ok)),
    )


@st.composite
def upstream_specs(draw: st.DrawFn) -> dict[str, Any]:
    mutual = draw(st.booleans())
    ca = draw(optional(st.sampled_from(CA_BUNDLES)))
    return compact(
        mode="mutual" if mutual else draw(optional(st.just("simple"))),
        client_certificate=draw(st.sampled_from(KEY_PAIRS)) if mutual else None,
        sni=draw(optional(st.sampled_from(["api.internal", "shop.example.com"]))),
        ca=ca,
        subject_alt_names=draw(st.lists(san_matchers, max_size=2)) if ca else None,
        **draw(tls_parameters().filter(_versions_ok)),
    )


@st.composite
def tls_documents(draw: st.DrawFn) -> tuple[list[dict[str, Any]], tuple[str, ...], tuple[str, ...]]:
    """(Certificate and TlsPolicy documents, policies with a downstream part, with an
    upstream part); a quarter of the time no TLS at all."""
    if draw(st.integers(0, 3)) == 0:
        return [], (), ()
    material = tls_material()
    documents = [
        {"kind": "Certificate", "name": name, "spec": dict(spec)} for name, spec in material.items()
    ]
    downstream: list[str] = []
    upstream: list[str] = []
    for name in draw(st.lists(st.sampled_from(["tls-a", "tls-b"]), min_size=1, unique=True)):
        spec = compact(
            downstream=draw(optional(downstream_specs())),
            upstream=draw(optional(upstream_specs())),
        )
        if not spec:
            spec["downstream"] = draw(downstream_specs())
        documents.append({"kind": "TlsPolicy", "name": name, "spec": spec})
        if "downstream" in spec:
            downstream.append(name)
        if "upstream" in spec:
            upstream.append(name)
    return documents, tuple(downstream), tuple(upstream)


# -- Edge policies and telemetry -----------------------------------------------------------

#: A real RSA public key, so Envoy's JWKS parsing has something to accept.
INLINE_JWKS = {
    "keys": [
        {
            "kty": "RSA",
            "kid": "k1",
            "alg": "RS256",
            "e": "AQAB",
            "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV"
            "3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8e"
            "xSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJay"
            "nVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0Ga"
            "DWFLN-aEAw3vRw",
        }
    ]
}
token_names = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)
claim_values = st.text(string.ascii_letters + string.digits + ":._-", min_size=1, max_size=12)


@st.composite
def jwt_providers(draw: st.DrawFn, name: str) -> dict[str, Any]:
    jwks = draw(
        st.one_of(
            st.just({"inline": INLINE_JWKS}),
            st.builds(
                lambda url, timeout, cache: compact(url=url, timeout=timeout, cache_duration=cache),
                st.sampled_from(
                    [
                        "https://idp.example.com/.well-known/jwks.json",
                        "http://10.0.0.9:8080/keys",
                        "https://[::1]:8443/jwks",
                        "http://keys.internal/jwks",
                    ]
                ),
                optional(positive_durations),
                optional(positive_durations),
            ),
        )
    )
    return compact(
        name=name,
        issuer=draw(optional(st.sampled_from(["https://idp.example.com", "issuer-1"]))),
        audiences=draw(optional(st.lists(claim_values, unique=True, max_size=2))),
        jwks=jwks,
        token_sources=draw(
            optional(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "headers": st.lists(
                            st.builds(
                                lambda n, p: {"name": n, "prefix": p},
                                st.sampled_from(["authorization", "x-token"]),
                                st.sampled_from(["", "Bearer "]),
                            ),
                            max_size=2,
                            unique_by=lambda h: h["name"],
                        ),
                        "cookies": st.lists(token_names, unique=True, max_size=2),
                        "query_params": st.lists(token_names, unique=True, max_size=2),
                    },
                )
            )
        ),
        claim_to_headers=draw(
            optional(
                st.lists(
                    st.builds(
                        lambda c, h: {"claim": c, "header": h},
                        st.sampled_from(["sub", "email", "address.country"]),
                        st.sampled_from(["x-user", "x-email", "x-country"]),
                    ),
                    max_size=2,
                    unique_by=lambda c: c["header"],
                )
            )
        ),
        forward=draw(optional(st.booleans())),
        clock_skew=draw(optional(st.integers(0, 600).map(lambda s: f"{s}s"))),
    )


@st.composite
def edge_documents(
    draw: st.DrawFn, listener_names: list[str]
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Auth and rate limit policies: each listener is named by at most one of each kind."""
    documents: list[dict[str, Any]] = []
    auth = draw(st.lists(st.sampled_from(["jwt-a", "jwt-b"]), unique=True))
    limits = draw(st.lists(st.sampled_from(["rl-a", "rl-b"]), unique=True))
    for names, kind in ((auth, "AuthPolicy"), (limits, "RateLimitPolicy")):
        free = list(listener_names)
        for name in names:
            mine = draw(st.lists(st.sampled_from(free), unique=True)) if free else []
            free = [n for n in free if n not in mine]
            if kind == "AuthPolicy":
                providers = draw(st.lists(st.sampled_from(["p1", "p2"]), min_size=1, unique=True))
                spec: dict[str, Any] = {"providers": [draw(jwt_providers(p)) for p in providers]}
            else:
                spec = compact(
                    requests=draw(st.integers(1, 10_000)),
                    per=draw(optional(durations(min_ms=50, max_ms=60_000))),
                    burst=draw(optional(st.integers(1, 100_000))),
                    by=draw(
                        optional(
                            one_of_fields(
                                header=st.sampled_from(["x-api-key", ":authority"]),
                                client_address=st.just(True),
                            )
                        )
                    ),
                    status=draw(optional(st.sampled_from([429, 503, 403, 421]))),
                    response_headers=draw(
                        optional(
                            st.dictionaries(
                                st.sampled_from(["x-limit", "retry-after"]),
                                header_values,
                                max_size=2,
                            )
                        )
                    ),
                    rate_limit_headers=draw(optional(st.booleans())),
                )
            if mine:
                spec["listeners"] = mine
            documents.append({"kind": kind, "name": name, "spec": spec})
    return documents, auth, limits


@st.composite
def rule_edge(draw: st.DrawFn, auth: list[str], limits: list[str]) -> dict[str, Any]:
    """A rule's ``auth`` and ``rate_limit`` (claims always with a policy: valid anywhere)."""
    result: dict[str, Any] = {}
    if draw(st.booleans()) and auth:
        if draw(st.booleans()):
            result["auth"] = {"disabled": True}
        else:
            result["auth"] = compact(
                policy=draw(st.sampled_from(auth)),
                claims=draw(
                    optional(
                        st.lists(
                            st.builds(
                                lambda c, kind: {"claim": c, **kind},
                                st.sampled_from(["scope", "roles", "tier"]),
                                one_of_fields(exact=header_values, contains=claim_values),
                            ),
                            min_size=1,
                            max_size=3,
                        )
                    )
                ),
            )
    if draw(st.booleans()):
        if draw(st.booleans()) and limits:
            result["rate_limit"] = {"policy": draw(st.sampled_from(limits))}
        elif draw(st.booleans()):
            result["rate_limit"] = {"disabled": True}
    return result


@st.composite
def telemetry(draw: st.DrawFn) -> dict[str, Any]:
    provider = draw(st.sampled_from(["opentelemetry", "zipkin"]))
    tracing = compact(
        provider=provider,
        collector=draw(st.sampled_from(["127.0.0.1:4317", "otel.internal:4317", "[::1]:9411"])),
        sampling=draw(optional(st.floats(0, 100))),
        tags=draw(optional(st.dictionaries(token_names, header_values.filter(bool), max_size=3))),
        service_name=draw(optional(token_names)) if provider == "opentelemetry" else None,
        path=draw(optional(paths)) if provider == "zipkin" else None,
    )
    return compact(
        tracing=tracing if draw(st.booleans()) else None,
        request_id=draw(optional(st.booleans())),
    )


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
    tls, downstream, upstream = draw(tls_documents())
    result = [
        *tls,
        *(
            {"kind": "Listener", "name": name, "spec": draw(listener_spec(port, downstream))}
            for name, port in zip(listener_names, ports, strict=True)
        ),
    ]
    for document in result:
        spec = document["spec"]
        if document["kind"] != "Listener":
            continue
        if draw(st.booleans()):
            spec["telemetry"] = draw(telemetry())
        if not spec.get("https_redirect") and draw(st.integers(0, 4)) == 0:
            spec["metrics"] = compact(
                path=draw(optional(paths)),
                admin_address=draw(optional(st.sampled_from(["127.0.0.1:9901", "[::1]:9000"]))),
            )
    edge, auth_names, limit_names = draw(edge_documents(listener_names))
    result += edge
    policy_names = draw(st.lists(st.sampled_from(["default", "fast"]), unique=True))
    result += [
        {"kind": "RetryPolicy", "name": name, "spec": draw(retry_specs())} for name in policy_names
    ]
    for service in draw(st.lists(st.sampled_from(SERVICES), unique=True, max_size=3)):
        name = service.lower().replace(".", "-").replace("_", "-")
        if name == service:  # a ServicePolicy's name is the service: a DNS label
            result.append(
                {
                    "kind": "ServicePolicy",
                    "name": name,
                    "spec": draw(service_policy_specs(upstream)),
                }
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
                    rules=[
                        {**rule, **draw(rule_edge(auth_names, limit_names))}
                        for rule in draw(st.lists(rules(policy_names), min_size=1, max_size=3))
                    ],
                ),
            }
        )
    result += draw(stream_documents(result, SERVICES))
    return draw(with_subsets(result))


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


# -- The mesh ------------------------------------------------------------------------------

MESH_SERVICES = ("api", "web", "billing", "db")
_MESH_EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@cache
def mesh_certificate() -> tuple[str, str]:
    """One real ECDSA P-256 certificate and key (PEM), self-signed with a SPIFFE URI SAN,
    made once: it stands for every identity and the whole trust bundle (Envoy checks that
    they load, not who signed what). Fixed dates, far apart: no clock in what tests build."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mesh test")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_MESH_EPOCH)
        .not_valid_after(_MESH_EPOCH + datetime.timedelta(days=36500))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(spiffe_id("mesh.local", "test"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )


def mesh_identities(services: Iterable[str], trust_domain: str = "mesh.local") -> Identities:
    """An identity for each of ``services`` (all with the one test certificate)."""
    chain, key = mesh_certificate()
    return Identities(
        by_service=MappingProxyType(
            {
                service: WorkloadIdentity(
                    service=service,
                    spiffe_id=spiffe_id(trust_domain, service),
                    certificate_chain=chain,
                    private_key=key,
                    serial="01",
                    not_before=_MESH_EPOCH,
                    not_after=_MESH_EPOCH + datetime.timedelta(days=1),
                )
                for service in services
            }
        ),
        trust_bundle=(chain,),
    )


MESH_PROTOCOLS = ("http", "http2", "grpc", "tcp")
METHODS = ("GET", "POST", "PUT", "DELETE")


@st.composite
def http_permissions(draw: st.DrawFn) -> dict[str, Any]:
    path = draw(st.sampled_from(["path_exact", "path_prefix", None]))
    return compact(
        **({path: draw(paths)} if path is not None else {}),
        methods=draw(optional(st.lists(st.sampled_from(METHODS), min_size=1, unique=True))),
        headers=draw(
            optional(
                st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["x-user", "x-tenant"])},
                        optional={"exact": st.sampled_from(["a", "b"])},
                    ).map(lambda h: h if "exact" in h else {**h, "present": True}),
                    min_size=1,
                    max_size=2,
                )
            )
        ),
    )


def _to_mesh_services(draw: st.DrawFn, rule: dict[str, Any], services: list[str]) -> None:
    """``rule``'s backends (and mirror) replaced by mesh services, weights kept."""
    backends = rule.get("backends")
    if backends:
        chosen = draw(st.lists(st.sampled_from(services), min_size=1, unique=True))
        rule["backends"] = [
            {"service": service, "weight": backend["weight"]}
            for service, backend in zip(chosen, backends, strict=False)
        ]
        if sum(backend["weight"] for backend in rule["backends"]) == 0:
            rule["backends"][0]["weight"] = 1
    mirror = rule.get("filters", {}).get("mirror")
    if mirror is not None:
        mirror["service"] = draw(st.sampled_from(services))


@st.composite
def mesh_routes(
    draw: st.DrawFn,
    services: list[str],
    protocols: dict[str, str],
    upstreams: dict[str, list[str]],
) -> list[dict[str, Any]]:
    """Sometimes routes attached to mesh upstreams (``RouteSpec.upstreams``), sending to
    mesh services (those with a ``Sidecar``)."""
    called = sorted({u for s in services for u in upstreams[s] if protocols.get(u) != "tcp"})
    if not called:
        return []
    result = []
    for index in range(draw(st.integers(0, 2))):
        drawn = draw(st.lists(rules([]), min_size=1, max_size=3))
        for rule in drawn:
            _to_mesh_services(draw, rule, services)
        result.append(
            {
                "kind": "Route",
                "name": f"mesh-route-{index}",
                "spec": {
                    "upstreams": draw(st.lists(st.sampled_from(called), min_size=1, unique=True)),
                    "rules": drawn,
                },
            }
        )
    return result


@st.composite
def mesh_documents(draw: st.DrawFn, taken_ports: frozenset[int]) -> list[dict[str, Any]]:
    """A ``Mesh``, sidecars for some of ``MESH_SERVICES`` (each with upstreams) and
    intentions between them; every listener port distinct and not in ``taken_ports``
    (validation bootstraps put every group's listeners into one Envoy, and an application
    listens on its sidecar's host)."""
    services = draw(st.lists(st.sampled_from(MESH_SERVICES), min_size=1, unique=True))
    protocols = {s: draw(st.sampled_from(MESH_PROTOCOLS)) for s in services}
    upstreams = {
        s: draw(st.lists(st.sampled_from([u for u in MESH_SERVICES if u != s]), unique=True))
        for s in services
    }
    wanted = 2 * len(services) + sum(len(u) for u in upstreams.values())
    free = st.integers(1024, 65535).filter(lambda port: port not in taken_ports)
    ports = iter(draw(st.lists(free, min_size=wanted, max_size=wanted, unique=True)))
    result = [
        {
            "kind": "Mesh",
            "name": "mesh",
            "spec": compact(
                trust_domain=draw(optional(st.sampled_from(["mesh.local", "corp.example.com"]))),
                mtls=draw(optional(st.sampled_from(["strict", "permissive"]))),
                default_action=draw(optional(st.sampled_from(["allow", "deny"]))),
                certificate_ttl=draw(optional(st.sampled_from(["1m", "1h", "24h"]))),
            ),
        }
    ]
    taken: set[str] = set()  # a group fronts one service (``mesh_checks._shared_groups``)
    for service in services:
        inbound = compact(
            port=next(ports),
            local_address=draw(optional(st.sampled_from(["127.0.0.1", "10.0.0.7", "::1"]))),
            local_port=next(ports),  # the application's port: taken on the host too
            protocol=protocols[service],
        )
        free_groups = [g for g in GROUPS if g not in taken]
        choices = [service, f"{service}-b", *free_groups]
        groups = draw(optional(st.lists(st.sampled_from(choices), min_size=1, unique=True)))
        taken.update(groups or (service,))
        result.append(
            {
                "kind": "Sidecar",
                "name": service,
                "spec": compact(
                    groups=groups,
                    inbound=inbound,
                    upstreams=[
                        {
                            "service": upstream,
                            "local_port": next(ports),
                            "protocol": protocols.get(
                                upstream, draw(st.sampled_from(MESH_PROTOCOLS))
                            ),
                        }
                        for upstream in upstreams[service]
                    ],
                ),
            }
        )
    result.extend(draw(mesh_routes(services, protocols, upstreams)))
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(["*", *MESH_SERVICES]), st.sampled_from(services)).filter(
                lambda pair: pair[0] != pair[1]
            ),
            unique=True,
            max_size=6,
        )
    )
    for index, (source, destination) in enumerate(pairs):
        spec: dict[str, Any] = {"source": source, "destination": destination}
        if protocols[destination] != "tcp" and draw(st.booleans()):
            spec["permissions"] = draw(
                st.lists(
                    st.fixed_dictionaries(
                        {"action": st.sampled_from(["allow", "deny"]), "http": http_permissions()}
                    ),
                    min_size=1,
                    max_size=3,
                )
            )
        else:
            spec["action"] = draw(st.sampled_from(["allow", "deny"]))
        result.append({"kind": "Intention", "name": f"i{index}", "spec": spec})
    return result


def listener_ports(raws: list[dict[str, Any]]) -> frozenset[int]:
    return frozenset(raw["spec"]["port"] for raw in raws if raw["kind"] == "Listener")


@st.composite
def mesh_inventories(draw: st.DrawFn) -> Inventory:
    """``inventories()`` with sidecars (mesh endpoints) for some of ``MESH_SERVICES``."""
    inventory = draw(inventories())
    for name in draw(st.lists(st.sampled_from(MESH_SERVICES), unique=True)):
        found = inventory.get(name) or Service(name)
        sidecars = tuple(draw(st.lists(endpoints, max_size=3)))
        inventory = inventory.with_service(Service(name, found.endpoints, sidecars))
    return inventory
