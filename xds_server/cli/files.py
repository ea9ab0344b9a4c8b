"""What ``-f`` names: a file, stdin (``-``), or a directory of files applied together.

A directory is read as one apply: every ``*.yaml``, ``*.yml`` and ``*.json`` file in it, in
name order, sent in one request (one revision, validated as a whole, so a file may refer to
documents of another whatever their order). A document given again by a later file replaces
the earlier one, as applying the files one after another would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

import yaml

from xds_server.cli.client import CliError

#: The files of a directory that are read, by suffix.
DOCUMENT_SUFFIXES: Final = frozenset({".yaml", ".yml", ".json"})

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_file(filename: str) -> tuple[bytes, bool]:
    """The file's bytes and whether it is JSON (by its name, or by its first character)."""
    try:
        raw = sys.stdin.buffer.read() if filename == "-" else Path(filename).read_bytes()
    except OSError as error:
        raise CliError(
            [f"error: cannot read {filename}: {error.strerror or error}"], code=2
        ) from None
    if filename.endswith(".json"):
        return raw, True
    return raw, filename == "-" and raw.lstrip()[:1] in (b"[", b"{")


def read_documents(filename: str) -> tuple[bytes, bool]:
    """A body for ``POST /v1/apply`` and whether it is JSON: the file as it is, or the
    documents of a directory's files as one JSON array."""
    if filename == "-" or not Path(filename).is_dir():
        return read_file(filename)
    return json.dumps(directory_documents(Path(filename))).encode(), True


def directory_documents(directory: Path) -> list[Any]:
    """The documents of every file of ``directory`` (see the module docstring)."""
    files = sorted(p for p in directory.iterdir() if p.suffix in DOCUMENT_SUFFIXES and p.is_file())
    if not files:
        suffixes = ", ".join(sorted(DOCUMENT_SUFFIXES))
        raise CliError([f"error: {directory} holds no document files ({suffixes})"], code=2)
    documents: dict[Any, Any] = {}
    for path in files:
        for index, value in enumerate(_values(path)):
            # Anything but a document is kept as it is (the server says what is wrong with it).
            key = _key(value) or (str(path), index)
            documents.pop(key, None)
            documents[key] = value
    return list(documents.values())


def _key(value: Any) -> tuple[str, str] | None:
    if isinstance(value, dict) and isinstance(value.get("kind"), str):
        name = value.get("name")
        if isinstance(name, str):
            return value["kind"], name
    return None


def _values(path: Path) -> list[Any]:
    """The documents of one file: a JSON value or a YAML stream, a list spread out."""
    raw, _ = read_file(str(path))
    try:
        loaded = [doc for doc in yaml.load_all(raw, Loader=_Loader) if doc is not None]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = error.problem or error.context or "invalid YAML"
        raise CliError([f"error: {path}: not valid YAML{where}: {reason}"], code=2) from None
    except yaml.YAMLError as error:
        raise CliError([f"error: {path}: not valid YAML: {error}"], code=2) from None
    values: list[Any] = []
    for value in loaded:
        values.extend(value if isinstance(value, list) else [value])
    return values
