from __future__ import annotations

import pytest

from tests.unit.model_builders import config_of, doc, listener, route
from xds_server.model import Config, InvalidDocuments, Kind, parse_document


def test_from_documents_groups_by_kind_with_revisions() -> None:
    config = Config.from_documents(
        [
            ("Route", "web", route()["spec"], 7),
            ("Listener", "public", {"port": 80}, 3),
            ("RetryPolicy", "default", {}, 4),
            ("ServicePolicy", "web", {"connect_timeout": "1s"}, 5),
        ]
    )
    assert list(config.listeners) == ["public"]
    assert config.routes["web"].created_revision == 7
    assert config.retry_policies["default"].spec.num_retries == 1
    service_policy = config.service_policy("web")
    assert service_policy is not None and str(service_policy.connect_timeout) == "1s"
    assert config.service_policy("other") is None
    assert config.get(Kind.LISTENER, "public") is config.listeners["public"]


def test_from_documents_reports_every_problem() -> None:
    with pytest.raises(InvalidDocuments) as caught:
        Config.from_documents(
            [
                ("Listener", "a", {"port": 0}, 1),
                ("Listener", "b", {"port": 80}, 2),
                ("Listener", "b", {"port": 81}, 3),
                ("Nope", "c", {}, 4),
            ]
        )
    found = [(p.kind, p.name, p.field) for p in caught.value.problems]
    assert found == [
        ("Listener", "a", "spec.port"),
        ("Listener", "b", "name"),
        ("Nope", "c", "kind"),
    ]


def test_mappings_are_sorted_and_read_only() -> None:
    config = config_of(listener("b", 81), listener("a", 80))
    assert list(config.listeners) == ["a", "b"]
    with pytest.raises(TypeError):
        config.listeners["c"] = config.listeners["a"]  # type: ignore[index]


def test_with_and_without_document() -> None:
    config = config_of(listener())
    updated = config.with_document(parse_document(listener(port=9090)))
    assert updated.listeners["public"].spec.port == 9090
    assert updated.listeners["public"].created_revision == 1  # kept
    assert config.listeners["public"].spec.port == 8080  # the original is untouched
    added = updated.with_document(parse_document(doc("RetryPolicy", "fast")), 9)
    assert added.retry_policies["fast"].created_revision == 9
    assert "public" not in added.without_document("Listener", "public").listeners


def test_documents_round_trip() -> None:
    config = config_of(listener(), route(), doc("RetryPolicy", "default"))
    again = Config.from_documents(
        (d.kind, d.name, d.spec.model_dump(mode="json"), revision)
        for d, revision in config.documents()
    )
    assert again == config
