"""Configs from stored documents, parsing only the documents that changed.

A store state holds every document; a write changes one. Parsing all of them again on every
revision cost more than the rest of a write together (a thousand-rule config is a thousand
pydantic models), so a parser remembers the last few versions of each document and parses
only a spec that is neither the very object seen before nor equal to one. Equality matters
because a store hands out a fresh copy of what it commits (and Consul KV decodes every
document afresh on reload); identity makes the common case free. A few versions, not one,
because the admin API checks a proposed state beside the current one, and one parser serves
the admin API and the snapshot pipeline, which see states one revision apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from xds_server.model.config import Config, Entry, RawDocument
from xds_server.model.document import Kind, Spec, parse_spec
from xds_server.model.problems import InvalidDocuments, Problem

DocumentKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Parsed:
    raw: Mapping[str, Any]
    #: The parsed spec, or why it does not parse.
    result: Spec | tuple[Problem, ...]


#: Versions of one document kept: the current one, a proposed one, and one to spare.
VERSIONS_KEPT = 3


class ConfigParser:
    """Safe to share between threads: its memory only ever holds finished parses, and a lost
    update costs one parse."""

    def __init__(self) -> None:
        self._known: dict[DocumentKey, tuple[_Parsed, ...]] = {}
        #: Documents parsed (not found in memory), for tests and benchmarks.
        self.parsed = 0

    def remember(self, kind: str, name: str, raw: Mapping[str, Any], spec: Spec) -> None:
        """Record that ``raw`` parses to ``spec`` (the admin API parsed the document already)."""
        self._keep((kind, name), _Parsed(raw, spec))

    def parse(self, documents: Iterable[RawDocument]) -> tuple[Config, list[Problem]]:
        """The config of ``documents`` and the problems of those that do not parse (left out
        of the config), each document listed at most once."""
        seen: set[DocumentKey] = set()
        entries: dict[Kind, dict[str, Entry[Any]]] = {kind: {} for kind in Kind}
        problems: list[Problem] = []
        for kind, name, raw, created_revision in documents:
            key = (kind, name)
            if key in seen:
                problems.append(Problem(kind, name, "name", "the document is listed twice"))
                continue
            seen.add(key)
            result = self._parsed(key, raw)
            if isinstance(result, tuple):
                problems.extend(result)
            else:
                entries[Kind(kind)][name] = Entry(name, result, created_revision)
        self._forget_all_but(seen)
        return Config.of_entries(entries), problems

    def config_of(self, documents: Iterable[RawDocument]) -> Config:
        """``parse``, raising ``InvalidDocuments`` if any document does not parse."""
        config, problems = self.parse(documents)
        if problems:
            raise InvalidDocuments(problems)
        return config

    def _parsed(self, key: DocumentKey, raw: Mapping[str, Any]) -> Spec | tuple[Problem, ...]:
        versions = self._known.get(key, ())
        for known in versions:
            if known.raw is raw:
                return known.result
        for known in versions:
            if known.raw == raw:
                self._keep(key, _Parsed(raw, known.result))  # the next look is by identity
                return known.result
        self.parsed += 1
        result: Spec | tuple[Problem, ...]
        try:
            result = parse_spec(key[0], key[1], raw)
        except InvalidDocuments as error:
            result = tuple(error.problems)
        self._keep(key, _Parsed(raw, result))
        return result

    def _keep(self, key: DocumentKey, parsed: _Parsed) -> None:
        versions = self._known.get(key, ())
        self._known[key] = (parsed, *versions[: VERSIONS_KEPT - 1])

    def _forget_all_but(self, keys: set[DocumentKey]) -> None:
        """Deleted documents go once they are a good part of what is remembered."""
        if len(self._known) > 2 * len(keys) + 64:
            self._known = {key: self._known[key] for key in keys if key in self._known}
