"""Store states as parsed ``Config``\\ s, and their validation reports.

Parsing every document on every request would cost as much as the rest of the request
together, so parsed documents are kept between calls (``ConfigParser``): only a document
that changed is parsed again. Documents that do not parse (stored by another version) are
left out of the config and reported as errors of the state.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from xds_server.admin.certificates import shared_reader
from xds_server.model import (
    AnyDocument,
    Config,
    Inventory,
    Problem,
    ValidationReport,
    kind_named,
    validate_config,
)
from xds_server.model.config_parser import ConfigParser
from xds_server.model.validation import FileReader
from xds_server.store import ConfigState, DocKey

#: A checked state is reused for this long (seconds) at most: certificate expiry depends on
#: the clock, and certificate files may change on disk.
RECHECK_AFTER = 30.0


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, slots=True)
class CheckedState:
    """A state, its config, and every error and warning of it (parse errors included)."""

    state: ConfigState
    config: Config
    report: ValidationReport
    _by_document: Mapping[DocKey, tuple[list[Problem], list[Problem]]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        by_document: dict[DocKey, tuple[list[Problem], list[Problem]]] = {}
        for problems, position in ((self.report.errors, 0), (self.report.warnings, 1)):
            for problem in problems:
                by_document.setdefault((problem.kind, problem.name), ([], []))[position].append(
                    problem
                )
        object.__setattr__(self, "_by_document", MappingProxyType(by_document))

    def errors_of(self, kind: str, name: str) -> list[Problem]:
        return self._by_document.get((kind, name), ([], []))[0]

    def warnings_of(self, kind: str, name: str) -> list[Problem]:
        return self._by_document.get((kind, name), ([], []))[1]

    def spec_of(self, kind: str, name: str) -> Any | None:
        """The parsed spec of a document, ``None`` if it does not exist or does not parse."""
        entry = self.config.get(kind, name) if kind_named(kind) is not None else None
        return entry.spec if entry is not None else None


class ConfigChecker:
    """Certificates are checked for expiry against ``clock`` and, when given as paths, read
    with ``read_file`` (so tests can fake both)."""

    def __init__(
        self,
        inventory: Callable[[], Inventory],
        clock: Callable[[], datetime.datetime] = _utc_now,
        read_file: FileReader | None = None,
        parser: ConfigParser | None = None,
    ) -> None:
        self._inventory = inventory
        self._clock = clock
        self._read_file = read_file if read_file is not None else shared_reader()
        self._parser = parser if parser is not None else ConfigParser()
        self._last: tuple[ConfigState, Inventory, CheckedState, float] | None = None

    def check(self, state: ConfigState) -> CheckedState:
        """``state`` parsed and validated against the current inventory."""
        inventory = self._inventory()
        last = self._last
        if (
            last is not None
            and last[0] is state
            and last[1] is inventory
            and time.monotonic() - last[3] < RECHECK_AFTER
        ):
            return last[2]
        config, parse_errors = self._config_of(state)
        report = validate_config(config, inventory, now=self._clock(), read_file=self._read_file)
        if parse_errors:
            report = ValidationReport(sorted([*report.errors, *parse_errors]), report.warnings)
        checked = CheckedState(state, config, report)
        self._last = (state, inventory, checked, time.monotonic())
        return checked

    def adopt(self, state: ConfigState, like: CheckedState) -> CheckedState:
        """``state``, known to hold the same documents as ``like.state`` (a commit of what a
        dry run planned), checked without a second validation."""
        checked = CheckedState(state, like.config, like.report)
        self._last = (state, self._inventory(), checked, time.monotonic())
        return checked

    def remember(self, document: AnyDocument, raw: Mapping[str, Any]) -> None:
        """``raw`` (a stored spec) is ``document``'s spec, already parsed: not parsed again."""
        self._parser.remember(document.kind, document.name, raw, document.spec)

    def _config_of(self, state: ConfigState) -> tuple[Config, list[Problem]]:
        return self._parser.parse(
            (doc.kind, doc.name, doc.spec, doc.created_revision)
            for doc in sorted(state.documents.values(), key=lambda doc: doc.key)
        )
