"""ConfigParser: a revision's config without parsing again what did not change."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from tests.unit.model_builders import config_of, listener, route
from xds_server.model import Config, InvalidDocuments
from xds_server.model.config import RawDocument
from xds_server.model.config_parser import ConfigParser


def raws(*documents: Mapping[str, Any]) -> list[RawDocument]:
    return [
        (d["kind"], d["name"], d["spec"], revision) for revision, d in enumerate(documents, start=1)
    ]


def test_same_config_as_a_fresh_parse() -> None:
    documents = (listener(), route("a"), route("b", rules=[{"backends": [{"service": "b"}]}]))
    parsed = ConfigParser().config_of(raws(*documents))
    assert parsed == config_of(*documents)


def test_only_changed_documents_are_parsed_again() -> None:
    parser = ConfigParser()
    documents = [listener(), route("a"), route("b")]
    parser.config_of(raws(*documents))
    assert parser.parsed == 3

    changed = route("b", rules=[{"backends": [{"service": "other"}]}])
    config = parser.config_of(raws(documents[0], documents[1], changed))
    assert parser.parsed == 4
    assert config.routes["b"].spec.rules[0].backends[0].service == "other"
    assert config.routes["a"].spec.rules[0].backends[0].service == "web"


def test_an_equal_spec_decoded_afresh_is_not_parsed_again() -> None:
    parser = ConfigParser()
    documents = [listener(), route("a")]
    first = parser.config_of(raws(*documents))
    again = parser.config_of(raws(*copy.deepcopy(documents)))
    assert parser.parsed == 2
    assert again == first


def test_the_two_latest_calls_are_remembered() -> None:
    """Writers alternate between the current state and the state a write proposes."""
    parser = ConfigParser()
    current = [listener(), route("a")]
    proposed = [listener(), route("a", hostnames=["a.example.com"])]
    parser.parse(raws(*current))
    parser.parse(raws(*proposed))
    parser.parse(raws(*current))
    parser.parse(raws(*proposed))
    assert parser.parsed == 3


def test_the_created_revision_comes_from_each_call() -> None:
    parser = ConfigParser()
    spec = route("a")["spec"]
    parser.config_of([("Route", "a", spec, 4)])
    config = parser.config_of([("Route", "a", spec, 9)])
    assert config.routes["a"].created_revision == 9


def test_problems_are_reported_and_remembered() -> None:
    parser = ConfigParser()
    broken = route("bad", rules=[{"backends": []}])
    config, problems = parser.parse(raws(listener(), broken))
    assert "bad" not in config.routes
    assert [(p.kind, p.name) for p in problems] == [("Route", "bad")]
    _, again = parser.parse(raws(listener(), broken))
    assert again == problems
    assert parser.parsed == 2
    with pytest.raises(InvalidDocuments):
        parser.config_of(raws(listener(), broken))


def test_a_document_listed_twice_is_a_problem() -> None:
    with pytest.raises(InvalidDocuments) as raised:
        ConfigParser().config_of(raws(route("a"), route("a")))
    assert [p.reason for p in raised.value.problems] == ["the document is listed twice"]


def test_empty() -> None:
    assert ConfigParser().config_of([]) == Config()


def test_a_remembered_parse_is_not_parsed_again() -> None:
    parser = ConfigParser()
    raw = route("a")["spec"]
    spec = ConfigParser().config_of([("Route", "a", raw, 1)]).routes["a"].spec
    parser.remember("Route", "a", raw, spec)
    config = parser.config_of([("Route", "a", copy.deepcopy(raw), 1)])
    assert parser.parsed == 0
    assert config.routes["a"].spec is spec
