"""How the command line shows things: rich tables on a terminal, plain columns in a pipe,
JSON and YAML for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: The columns of ``status``, in Envoy's push order.
TYPE_COLUMNS: Final = ("CDS", "EDS", "LDS", "RDS", "SDS")
_STYLE: Final = {
    "SYNCED": "green",
    "STALE": "yellow",
    "NOT_SENT": "dim",
    "NACKED": "bold red",
}


def console(stderr: bool = False) -> Console:
    """A console that never wraps or truncates a table in a pipe (scripts read the lines)."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return Console(
        file=stream,
        width=None if terminal else 10_000,
        highlight=False,
        soft_wrap=not terminal,
        no_color=not terminal,
    )


def print_table(columns: Sequence[str], rows: Iterable[Sequence[str | Text]]) -> None:
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console().print(table)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def print_yaml(values: Sequence[Any]) -> None:
    """One YAML document per value, separated by ``---`` (a stream ``apply`` takes back)."""
    sys.stdout.write(
        yaml.safe_dump_all(list(values), sort_keys=False, default_flow_style=False)
        if values
        else ""
    )


def status_text(status: str) -> Text:
    return Text(status, style=_STYLE.get(status, ""))


def ago(timestamp: str | None, now: datetime | None = None) -> str:
    """``2024-05-01T12:00:00.000Z`` as ``5m``, ``3h``, ``2d`` ago."""
    if not timestamp:
        return "-"
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def short_version(version: str) -> str:
    return version[:8] if version else "-"


def summary(document: Mapping[str, Any]) -> str:
    """A one-line gist of a document's spec for ``get`` tables."""
    spec = document.get("spec") or {}
    kind = document.get("kind")
    if kind == "Listener":
        address = spec.get("address", "0.0.0.0")
        text = f"{address}:{spec.get('port', '?')} {spec.get('protocol', 'http')}"
        groups = spec.get("groups")
        return text + (f" groups={','.join(groups)}" if groups else "")
    if kind == "Route":
        hosts = ",".join(spec.get("hostnames") or ["*"])
        services = sorted(
            {
                backend.get("service", "?")
                for rule in spec.get("rules") or []
                for backend in rule.get("backends") or []
            }
        )
        listeners = ",".join(spec.get("listeners") or [])
        return f"{listeners} {hosts} -> {','.join(services) or '-'}"
    if kind in ("TcpRoute", "TlsRoute"):
        listeners = ",".join(spec.get("listeners") or [])
        hosts = f" {','.join(spec.get('hostnames') or [])}" if kind == "TlsRoute" else ""
        backends = ",".join(
            f"{backend.get('service', '?')}:{backend.get('weight', 1)}"
            for backend in spec.get("backends") or []
        )
        return f"{listeners}{hosts} -> {backends or '-'}"
    return ""
