"""Export a whole config to a file and import one into any store, as one commit.

The file (JSON, or YAML for ``.yaml``/``.yml``)::

    format: xds-server/config
    version: 1
    exported_at: "2024-05-01T12:00:00.000Z"
    revision: 42                 # the store's revision when exported
    documents:                   # oldest first
      - {kind: Listener, name: public, spec: {...}, created_revision: 3, revision: 40,
         updated_at: "..."}
    history: [...]               # only with history=True: entries, oldest first
    secrets: {key: value}        # only with secrets=True: the mesh CA's root and its key

It holds private keys (``Certificate`` specs): it is written with mode 0600; keep it as
carefully as the store itself. The secret side channel (the keys the server generated itself,
such as the built-in mesh CA's) is left out unless asked for: a backup that includes it can
mint identities for every service of the mesh. Importing a file with ``secrets`` writes them
(replacing the target's; with ``replace=False`` only those the target lacks), after the commit.

Import makes the store's documents equal to the file's in **one** new revision (``replace``,
the default; like a rollback: documents missing from the file are deleted) or only creates and
updates (``replace=False``). Documents keep the age (``created_revision``) they had, so
"oldest first" precedence between conflicting documents is the same after a move between
stores (an age may then be above the target's revision: it only orders documents).
History in the file is for the record: the target keeps its own history and gets one new
revision noted ``import``. Spec validation happens above the store: pass ``validate`` (it
sees the resulting state and raises to refuse it; nothing is written then).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from xds_server.store.codec import document_json, entry_json, format_time
from xds_server.store.errors import StoreError
from xds_server.store.interface import (
    CommitResult,
    ConfigState,
    ConfigStore,
    Document,
    HistoryEntry,
    check_secret_key,
)

FORMAT = "xds-server/config"
VERSION = 1

Validate = Callable[[ConfigState], None]


class TransferError(StoreError, ValueError):
    """A file that is not an export of this format (or cannot be read or written)."""


# --- export -----------------------------------------------------------------------------------


async def all_history(store: ConfigStore, page: int = 1000) -> list[HistoryEntry]:
    """Every history entry the store still has, oldest revision first (commit order within)."""
    revisions: list[list[HistoryEntry]] = []
    before: int | None = None
    while entries := await store.history(limit=page, before_revision=before):
        group: list[HistoryEntry] = []
        for entry in entries:  # newest revision first, commit order within a revision
            if group and entry.revision != group[0].revision:
                revisions.append(group)
                group = []
            group.append(entry)
        revisions.append(group)
        before = entries[-1].revision
    return [entry for group in reversed(revisions) for entry in group]


async def export_config(
    store: ConfigStore, *, history: bool = False, secrets: bool = False
) -> dict[str, Any]:
    """The store's current documents (and, optionally, its history and its secrets) as one
    JSON object."""
    state = store.current()
    documents = sorted(state.documents.values(), key=lambda d: (d.created_revision, d.kind, d.name))
    data: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": format_time(datetime.now(UTC)),
        "revision": state.revision,
        "documents": [document_json(d) for d in documents],
    }
    if history:
        data["history"] = [entry_json(e) for e in await all_history(store)]
    if secrets:
        data["secrets"] = await store.secrets()
    return data


def dumps(data: dict[str, Any], fmt: str) -> str:
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}: json or yaml")


def format_of(path: str) -> str:
    return "yaml" if path.endswith((".yaml", ".yml")) else "json"


def write_export(
    data: dict[str, Any], path: str, fmt: str | None = None, *, stdout: TextIO | None = None
) -> None:
    """Write ``data`` to ``path`` (``-``: standard output), private (mode 0600)."""
    text = dumps(data, fmt or format_of(path))
    if path == "-":
        (stdout or sys.stdout).write(text)
        return
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)  # a reader never sees half a file
    except OSError as error:
        raise TransferError(f"cannot write {path}: {error.strerror or error}") from None


# --- import -----------------------------------------------------------------------------------


def read_export(path: str, *, stdin: TextIO | None = None) -> dict[str, Any]:
    """Read and check an export file (``-``: standard input)."""
    try:
        text = (stdin or sys.stdin).read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise TransferError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as error:
        raise TransferError(f"{path}: neither JSON nor YAML: {error}") from None
    return check_export(data, path)


def check_export(data: Any, source: str = "export") -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TransferError(f"{source}: not an xds-server config export (format: {FORMAT})")
    if data.get("version") != VERSION:
        raise TransferError(f"{source}: export version {data.get('version')!r}; this reads 1")
    documents = data.get("documents")
    if not isinstance(documents, list):
        raise TransferError(f"{source}: documents must be a list")
    seen: set[tuple[str, str]] = set()
    for index, doc in enumerate(documents):
        where = f"{source}: documents[{index}]"
        if not isinstance(doc, dict):
            raise TransferError(f"{where}: expected an object")
        kind, name, spec = doc.get("kind"), doc.get("name"), doc.get("spec")
        if not isinstance(kind, str) or not kind or not isinstance(name, str) or not name:
            raise TransferError(f"{where}: kind and name must be non-empty strings")
        if not isinstance(spec, dict):
            raise TransferError(f"{where} ({kind}/{name}): spec must be an object")
        created = doc.get("created_revision")
        if created is not None and (
            isinstance(created, bool) or not isinstance(created, int) or created < 1
        ):
            raise TransferError(f"{where} ({kind}/{name}): invalid created_revision")
        if (kind, name) in seen:
            raise TransferError(f"{where}: {kind}/{name} is listed twice")
        seen.add((kind, name))
    secrets = data.get("secrets")
    if secrets is not None:
        if not isinstance(secrets, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()
        ):
            raise TransferError(f"{source}: secrets must map keys to strings")
        for key in secrets:
            try:
                check_secret_key(key)
            except ValueError as error:
                raise TransferError(f"{source}: secrets: {error}") from None
    return data


def _target_state(
    current: ConfigState, documents: Sequence[dict[str, Any]], replace: bool
) -> ConfigState:
    """What the store should hold after the import (ages as in the file)."""
    docs = {} if replace else dict(current.documents)
    for doc in documents:
        key = (doc["kind"], doc["name"])
        old = current.documents.get(key)
        created = doc.get("created_revision") or (old.created_revision if old else 1)
        docs[key] = Document(
            doc["kind"],
            doc["name"],
            doc["spec"],
            current.revision,
            created,
            doc.get("updated_at", ""),
        )
    return ConfigState(current.revision, docs)


async def import_config(
    store: ConfigStore,
    data: dict[str, Any],
    actor: str,
    *,
    replace: bool = True,
    dry_run: bool = False,
    note: str | None = None,
    validate: Validate | None = None,
) -> CommitResult:
    """Make ``store`` hold the export's documents in one commit (see the module docstring).

    Raises ``TransferError`` for a bad export, whatever ``validate`` raises for a config it
    refuses, and the store's errors (``StoreUnavailable``, ``InvalidChange`` …)."""
    check_export(data)
    documents: list[dict[str, Any]] = data["documents"]
    label = f"import of revision {data.get('revision')}" + (f": {note}" if note else "")

    def target(state: ConfigState) -> ConfigState:  # like a rollback: exact documents and ages
        return _target_state(state, documents, replace)

    preview = await store.reach(target, actor, note=label, dry_run=True)
    if validate is not None:
        validate(preview.state)
    if dry_run:
        return preview
    result = await store.reach(target, actor, note=label)
    for key, value in (data.get("secrets") or {}).items():
        if replace:
            await store.put_secret(key, value)
        else:
            await store.put_secret_if_absent(key, value)
    return result
