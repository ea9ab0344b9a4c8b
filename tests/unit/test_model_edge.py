"""AuthPolicy, RateLimitPolicy and listener telemetry: what the model accepts and refuses,
and the cross-document checks."""

from __future__ import annotations

from typing import Any

import pytest

from xds_server.model import Config, InvalidDocuments, Inventory, parse_document, validate_config


def doc(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": kind, "name": name, "spec": spec}


JWKS_URL = {"url": "https://idp.example.com/jwks.json"}
PROVIDER = {"name": "idp", "jwks": JWKS_URL}


def fields_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidDocuments) as caught:
        parse_document(raw)
    return [problem.field for problem in caught.value.problems]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"providers": []}, "spec.providers"),
        ({"providers": [{"name": "idp", "jwks": {}}]}, "spec.providers[0].jwks"),
        (
            {"providers": [{"name": "idp", "jwks": {"url": "ftp://x/y"}}]},
            "spec.providers[0].jwks.url",
        ),
        (
            {"providers": [{"name": "idp", "jwks": {"url": "http://x/y", "ca": "ca"}}]},
            "spec.providers[0].jwks",
        ),
        (
            {"providers": [{"name": "idp", "jwks": {"inline": {"keys": []}}}]},
            "spec.providers[0].jwks.inline",
        ),
        ({"providers": [PROVIDER, PROVIDER]}, "spec"),
    ],
)
def test_bad_auth_policies_name_the_field(spec: dict[str, Any], field: str) -> None:
    assert field in fields_of(doc("AuthPolicy", "a", **spec))


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"requests": 0}, "spec.requests"),
        ({"requests": 1, "per": "10ms"}, "spec.per"),
        ({"requests": 1, "status": 200}, "spec.status"),
        ({"requests": 1, "by": {}}, "spec.by"),
        ({"requests": 1, "by": {"header": "a", "client_address": True}}, "spec.by"),
    ],
)
def test_bad_rate_limit_policies_name_the_field(spec: dict[str, Any], field: str) -> None:
    assert field in fields_of(doc("RateLimitPolicy", "r", **spec))


@pytest.mark.parametrize(
    ("telemetry", "field"),
    [
        ({"tracing": {"collector": "no-port"}}, "spec.telemetry.tracing.collector"),
        ({"tracing": {"collector": "a:99999"}}, "spec.telemetry.tracing.collector"),
        (
            {"tracing": {"provider": "zipkin", "collector": "z:9411", "service_name": "x"}},
            "spec.telemetry.tracing",
        ),
        ({"tracing": {"collector": "c:4317", "tags": {"a": ""}}}, "spec.telemetry.tracing.tags.a"),
    ],
)
def test_bad_telemetry_names_the_field(telemetry: dict[str, Any], field: str) -> None:
    raw = doc("Listener", "l", port=80, telemetry=telemetry)
    assert field in fields_of(raw)


def test_metrics_needs_an_ip_admin_address_and_excludes_redirects() -> None:
    assert "spec.metrics.admin_address" in fields_of(
        doc("Listener", "l", port=80, metrics={"admin_address": "envoy:9901"})
    )
    assert "spec" in fields_of(doc("Listener", "l", port=80, metrics={}, https_redirect=True))


def test_an_inline_jwks_object_is_kept_as_canonical_json_text() -> None:
    parsed = parse_document(
        doc(
            "AuthPolicy",
            "a",
            providers=[{"name": "p", "jwks": {"inline": {"keys": [{"kty": "EC", "b": 1}]}}}],
        )
    )
    assert parsed.spec.providers[0].jwks.inline == '{"keys":[{"b":1,"kty":"EC"}]}'  # type: ignore[union-attr]


def config(*raws: dict[str, Any]) -> Config:
    return Config.from_documents(
        (raw["kind"], raw["name"], raw["spec"], revision) for revision, raw in enumerate(raws, 1)
    )


def rule(**extra: Any) -> dict[str, Any]:
    return {"backends": [{"service": "web"}], **extra}


def test_cross_document_errors_and_warnings() -> None:
    report = validate_config(
        config(
            doc("Listener", "public", port=80),
            doc("Listener", "other", port=81),
            doc("AuthPolicy", "a", listeners=["public", "ghost"], providers=[PROVIDER]),
            doc("AuthPolicy", "b", listeners=["public"], providers=[PROVIDER]),
            doc("RateLimitPolicy", "r", listeners=["other"], requests=1),
            doc("RateLimitPolicy", "s", listeners=["other"], requests=1),
            doc(
                "Route",
                "web",
                listeners=["public", "other"],
                rules=[
                    rule(auth={"policy": "nope"}, rate_limit={"policy": "nope"}),
                    rule(auth={"claims": [{"claim": "scope", "contains": "x"}]}),
                ],
            ),
        ),
        Inventory(),
    )
    errors = {(p.kind, p.name, p.field) for p in report.errors}
    assert errors == {
        ("AuthPolicy", "a", "spec.listeners[1]"),  # no such listener
        ("AuthPolicy", "b", "spec.listeners[0]"),  # public already has policy a
        ("RateLimitPolicy", "s", "spec.listeners[0]"),
        ("Route", "web", "spec.rules[0].auth.policy"),
        ("Route", "web", "spec.rules[0].rate_limit.policy"),
        ("Route", "web", "spec.rules[1].auth.claims"),  # listener other has no AuthPolicy
    }
    warnings = {(p.kind, p.field) for p in report.warnings}
    assert ("AuthPolicy", "spec.providers[0].jwks.ca") in warnings  # https, unverified


def test_a_jwks_ca_must_be_a_ca_bundle() -> None:
    report = validate_config(
        config(
            doc("AuthPolicy", "a", providers=[{"name": "p", "jwks": {**JWKS_URL, "ca": "missing"}}])
        ),
        Inventory(),
    )
    assert [p.field for p in report.errors] == ["spec.providers[0].jwks.ca"]
