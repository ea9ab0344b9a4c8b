from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.model_builders import error_at, listener, problems, route
from xds_server.model import (
    InvalidDocuments,
    Kind,
    ListenerDocument,
    RouteDocument,
    parse_document,
    parse_spec,
)
from xds_server.model.document import document_adapter
from xds_server.model.problems import field_path

EXAMPLES = Path(__file__).resolve().parents[2] / "api" / "examples"


PER_KIND = {
    "listener.yaml": Kind.LISTENER,
    "route.yaml": Kind.ROUTE,
    "retry-policy.yaml": Kind.RETRY_POLICY,
    "service-policy.yaml": Kind.SERVICE_POLICY,
    "tls-policy.yaml": Kind.TLS_POLICY,
    "certificate.yaml": Kind.CERTIFICATE,
    "ca-bundle.yaml": Kind.CERTIFICATE,
    "auth-policy.yaml": Kind.AUTH_POLICY,
    "rate-limit-policy.yaml": Kind.RATE_LIMIT_POLICY,
}


@pytest.mark.parametrize(("file", "kind"), sorted(PER_KIND.items()))
def test_there_is_one_example_request_body_per_kind(file: str, kind: Kind) -> None:
    raw = yaml.safe_load((EXAMPLES / file).read_text())
    assert raw["kind"] == kind


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate(path: Path) -> None:
    """Every document of every example (some files are YAML streams for ``apply``)."""
    for raw in yaml.safe_load_all(path.read_text()):
        parsed = parse_document(raw)
        assert parsed.kind == raw["kind"] and parsed.name == raw["name"]
        # What GET would return parses back to the same document.
        assert parse_document(parsed.model_dump(mode="json")) == parsed


def test_envelope_dispatches_on_kind() -> None:
    assert isinstance(parse_document(listener()), ListenerDocument)
    assert isinstance(parse_document(route()), RouteDocument)


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ({"kind": "Gateway", "name": "x", "spec": {}}, "kind", "kind must be one of"),
        ({"name": "x", "spec": {}}, "kind", "kind must be one of"),
        ("not a document", "kind", "kind must be one of"),
        ({"kind": "Listener", "spec": {"port": 80}}, "name", "Field required"),
        ({"kind": "Listener", "name": "x"}, "spec", "Field required"),
        ({"kind": "Listener", "name": "-x", "spec": {"port": 80}}, "name", "not a valid name"),
        ({"kind": "Listener", "name": "a" * 64, "spec": {"port": 80}}, "name", "1-63"),
        (
            {"kind": "Listener", "name": "x", "spec": {"port": 80}, "revision": 3},
            "revision",
            "Extra inputs are not permitted",
        ),
    ],
)
def test_envelope_errors(raw: Any, field: str, reason: str) -> None:
    assert reason in error_at(raw, field)


def test_problems_name_document_field_and_reason() -> None:
    (problem,) = problems(listener(name="edge", port=0))
    assert (problem.kind, problem.name, problem.field) == ("Listener", "edge", "spec.port")
    assert str(problem).startswith("Listener 'edge': spec.port: ")


def test_parse_spec_from_parts() -> None:
    spec = parse_spec("Listener", "edge", {"port": 80})
    assert getattr(spec, "port") == 80  # noqa: B009
    with pytest.raises(InvalidDocuments) as caught:
        parse_spec("Listener", "edge", {"port": "eighty"})
    assert caught.value.problems[0].field == "spec.port"
    assert "spec.port" in str(caught.value)


def test_field_path() -> None:
    assert field_path(("spec", "rules", 0, "matches", 1, "path", "regex")) == (
        "spec.rules[0].matches[1].path.regex"
    )


def test_openapi_schema_is_generated() -> None:
    schema = document_adapter().json_schema()
    text = str(schema)
    for kind in Kind:
        assert kind.value in text
    assert "additionalProperties" in text
