"""Configs from stored documents, parsing only the documents that changed.

A store state holds every document; a write changes one. Parsing all of them again on every
revision cost more than the rest of a write together (a thousand-rule config is a thousand
pydantic models), so a parser remembers the last few versions of each document and parses
only a spec that is neither the very object seen before nor equal to one. Equality matters
because a store hands out a fresh copy of what it commits (and Consul KV decodes every
document afresh on reload); identity makes the common case free. A few versions, not one,
because the admin API checks a proposed state beside the current one, and one parser serves
the admin API and the snapshot pipeline, which see states one revision apart.

What comes out stays the same objects too: an unchanged document keeps its very ``Entry``,
and a kind none of whose documents changed keeps its very mapping, so what is memoised
downstream by identity (route translation, validation) is found again, and a write builds
new mappings only for the kinds it touched. A touched kind's mapping is a copy of the one
before in its order (sorted by name), sorted again only when names came or went.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from xds_server.model.config import Config, Entry, RawDocument
from xds_server.model.document import Kind, Spec, parse_spec
from xds_server.model.kinds import kind_info
from xds_server.model.problems import InvalidDocuments, Problem

DocumentKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Parsed:
    raw: Mapping[str, Any]
    #: The parsed spec, or why it does not parse.
    result: Spec | tuple[Problem, ...]


#: Versions of one document kept: the current one, a proposed one, and one to spare.
VERSIONS_KEPT = 3
#: Every kind's name and ``Config`` field, in ``Kind`` order.
_FIELDS = tuple((kind.value, kind_info(kind).config_field) for kind in Kind)


class ConfigParser:
    """Safe to share between threads: its memory only ever holds finished parses, and a lost
    update costs one parse."""

    def __init__(self) -> None:
        self._known: dict[DocumentKey, tuple[_Parsed, ...]] = {}
        #: The entries handed out last, per document (one per spec and age kept).
        self._entries: dict[DocumentKey, tuple[Entry[Any], ...]] = {}
        #: The mappings handed out last, per kind (most recent first).
        self._mappings: dict[str, tuple[Mapping[str, Entry[Any]], ...]] = {}
        #: Documents parsed (not found in memory), for tests and benchmarks.
        self.parsed = 0

    def remember(self, kind: str, name: str, raw: Mapping[str, Any], spec: Spec) -> None:
        """Record that ``raw`` parses to ``spec`` (the admin API parsed the document already)."""
        self._keep((kind, name), _Parsed(raw, spec))

    def parse(self, documents: Iterable[RawDocument]) -> tuple[Config, list[Problem]]:
        """The config of ``documents`` and the problems of those that do not parse (left out
        of the config), each document listed at most once."""
        seen: set[DocumentKey] = set()
        entries: dict[str, dict[str, Entry[Any]]] = {}
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
            else:  # parsed: ``kind`` is one of ``Kind``
                entries.setdefault(kind, {})[name] = self._entry(key, result, created_revision)
        self._forget_all_but(seen)
        config = Config(
            **{field: self._mapping(kind, entries.get(kind, {})) for kind, field in _FIELDS}
        )
        return config, problems

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

    def _entry(self, key: DocumentKey, spec: Spec, created_revision: int) -> Entry[Any]:
        """The entry handed out before for this spec and age, else a new one."""
        versions = self._entries.get(key, ())
        for entry in versions:
            if entry.spec is spec and entry.created_revision == created_revision:
                return entry
        entry = Entry(key[1], spec, created_revision)
        self._entries[key] = (entry, *versions[: VERSIONS_KEPT - 1])
        return entry

    def _mapping(self, kind: str, entries: dict[str, Entry[Any]]) -> Mapping[str, Entry[Any]]:
        """``entries`` sorted by name, frozen: the very mapping handed out before when it
        holds the same entries; else a copy of the last one's order when the names are the
        same (no sort)."""
        known = self._mappings.get(kind, ())
        for mapping in known:
            if len(mapping) == len(entries) and all(
                mapping.get(name) is entry for name, entry in entries.items()
            ):
                if mapping is not known[0]:
                    self._mappings[kind] = (mapping, *(m for m in known if m is not mapping))
                return mapping
        last = known[0] if known else None
        if last is not None and len(last) == len(entries) and all(n in last for n in entries):
            ordered = {name: entries[name] for name in last}
        else:
            ordered = dict(sorted(entries.items()))
        result: Mapping[str, Entry[Any]] = MappingProxyType(ordered)
        self._mappings[kind] = (result, *known[: VERSIONS_KEPT - 1])
        return result

    def _keep(self, key: DocumentKey, parsed: _Parsed) -> None:
        versions = self._known.get(key, ())
        self._known[key] = (parsed, *versions[: VERSIONS_KEPT - 1])

    def _forget_all_but(self, keys: set[DocumentKey]) -> None:
        """Deleted documents go once they are a good part of what is remembered."""
        if len(self._known) > 2 * len(keys) + 64:
            self._known = {key: self._known[key] for key in keys if key in self._known}
        if len(self._entries) > 2 * len(keys) + 64:
            self._entries = {key: self._entries[key] for key in keys if key in self._entries}
