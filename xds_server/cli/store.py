"""``xds-server store export`` and ``xds-server store import``: move a whole config between
stores (SQLite ↔ Consul KV), back it up, restore it.

    xds-server store export [--store STORE] [--history] [--include-secrets]
                            [--format json|yaml] FILE|-
    xds-server store import [--store STORE] [--merge] [--dry-run] [--actor NAME]
                            [--note TEXT] [--no-validate] FILE|-

``--store`` takes what ``serve --store`` takes (``sqlite:PATH``, ``consul-kv:PREFIX``; default
``XDS_SERVER_STORE``, then ``settings.DEFAULT_STORE``); Consul is reached as ``serve`` reaches it
(``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN`` … or ``--consul-addr``/``--consul-token``).
The secrets the server generated itself (the built-in mesh CA's root and its private key) are
left out of an export unless ``--include-secrets``; an import writes those a file holds.
An import is one new revision; the documents are validated first (structure and references,
as the REST API checks them) unless ``--no-validate``. A running server on Consul KV sees an
import at once; one on SQLite sees it at its next commit or restart (SQLite has no watch), so
prefer ``xds-server apply`` against a live SQLite server.

Hook it into the Typer app: ``store.register(app)`` (adds the ``store`` group).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from xds_server.cli.typer_app import command_group
from xds_server.model.config import Config
from xds_server.model.inventory import Inventory
from xds_server.model.problems import InvalidDocuments, Problem
from xds_server.model.validation import validate_config
from xds_server.settings import DEFAULT_STORE, Settings, SettingsError, check_store
from xds_server.store import CommitResult, ConfigState, ConfigStore, StoreError
from xds_server.store.transfer import (
    TransferError,
    export_config,
    import_config,
    read_export,
    write_export,
)

T = TypeVar("T")

store_app = command_group(
    "store", "Export the whole config of a store to a file, or import one (one revision)."
)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help=f"sqlite:PATH or consul-kv:PREFIX (default: XDS_SERVER_STORE, else {DEFAULT_STORE}).",
    ),
]
ConsulAddrOption = Annotated[
    str | None, typer.Option("--consul-addr", help="Consul address (default CONSUL_HTTP_ADDR).")
]
ConsulTokenOption = Annotated[
    str | None,
    typer.Option("--consul-token", help="Consul ACL token (default CONSUL_HTTP_TOKEN)."),
]


class InvalidImport(Exception):
    """The imported config would not be valid; ``problems`` says why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems


def register(app: typer.Typer) -> None:
    """Add ``store export`` / ``store import`` to the ``xds-server`` Typer app."""
    app.add_typer(store_app, name="store")


def open_store(
    store: str | None, consul_addr: str | None = None, consul_token: str | None = None
) -> ConfigStore:
    """The store ``serve --store`` would use (not opened yet)."""
    from xds_server.app import build_store  # the wiring; heavy, so only when running

    spec = check_store(store or os.environ.get("XDS_SERVER_STORE") or DEFAULT_STORE)
    settings = Settings(
        store=spec, consul_addr=consul_addr or None, consul_token=consul_token or None
    )
    return build_store(settings)


def validate_state(state: ConfigState) -> None:
    """Refuse a config the REST API would refuse (documents and references)."""
    try:
        config = Config.from_documents(
            (d.kind, d.name, d.spec, d.created_revision) for d in state.documents.values()
        )
    except InvalidDocuments as error:
        raise InvalidImport(list(error.problems)) from None
    report = validate_config(config, Inventory(synced=False))
    if report.errors:
        raise InvalidImport(report.errors)


async def _with_store(store: ConfigStore, work: Callable[[ConfigStore], Awaitable[T]]) -> T:
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


def _fail(message: str, code: int = 1) -> typer.Exit:
    print(f"xds-server store: {message}", file=sys.stderr)
    return typer.Exit(code)


def summary(result: CommitResult, dry_run: bool) -> str:
    counts = {"create": 0, "update": 0, "delete": 0}
    for entry in result.changed:
        counts[entry.operation] += 1
    changes = f"{counts['create']} created, {counts['update']} updated, {counts['delete']} deleted"
    if not result.changed:
        return (
            f"nothing to change: the store already holds this config (revision {result.revision})"
        )
    if dry_run:
        return f"dry run: revision {result.revision} would have {changes}; nothing was written"
    return f"imported as revision {result.revision}: {changes}"


@store_app.command("export")
def export_command(
    file: Annotated[str, typer.Argument(help="Where to write; '-' for standard output.")],
    store: StoreOption = None,
    history: Annotated[
        bool, typer.Option("--history", help="Include the history the store keeps.")
    ] = False,
    include_secrets: Annotated[
        bool,
        typer.Option(
            "--include-secrets",
            help="Also write the server's own secrets: the mesh CA's root and its PRIVATE KEY"
            " (whoever holds the file can issue any mesh identity).",
        ),
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="json or yaml (default: by the file's suffix, else json)."),
    ] = None,
    consul_addr: ConsulAddrOption = None,
    consul_token: ConsulTokenOption = None,
) -> None:
    """Write the store's whole config (Certificate keys included: the file is mode 0600)."""
    if fmt is not None and fmt not in ("json", "yaml"):
        raise _fail(f"--format: json or yaml, not {fmt!r}", 2)
    try:
        target = open_store(store, consul_addr, consul_token)
        data = asyncio.run(
            _with_store(
                target, lambda s: export_config(s, history=history, secrets=include_secrets)
            )
        )
        write_export(data, file, fmt)
    except SettingsError as error:
        raise _fail(str(error), 2) from None
    except StoreError as error:
        raise _fail(str(error)) from None
    entries = f", {len(data['history'])} history entries" if history else ""
    if include_secrets:
        entries += f", {len(data['secrets'])} secrets (private keys: keep the file safe)"
    print(
        f"exported revision {data['revision']}: {len(data['documents'])} documents{entries}"
        f" to {'standard output' if file == '-' else file}",
        file=sys.stderr,
    )


@store_app.command("import")
def import_command(
    file: Annotated[str, typer.Argument(help="An export file; '-' reads standard input.")],
    store: StoreOption = None,
    merge: Annotated[
        bool,
        typer.Option("--merge", help="Only create and update; keep documents not in the file."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and show what would change; write nothing.")
    ] = False,
    actor: Annotated[str, typer.Option(help="Recorded in history.")] = "store-import",
    note: Annotated[str | None, typer.Option(help="Added to the history note.")] = None,
    no_validate: Annotated[
        bool, typer.Option("--no-validate", help="Skip checking documents and references.")
    ] = False,
    consul_addr: ConsulAddrOption = None,
    consul_token: ConsulTokenOption = None,
) -> None:
    """Make the store hold the file's documents, in one new revision."""
    try:
        data = read_export(file)
        target = open_store(store, consul_addr, consul_token)
        result = asyncio.run(
            _with_store(
                target,
                lambda s: import_config(
                    s,
                    data,
                    actor,
                    replace=not merge,
                    dry_run=dry_run,
                    note=note,
                    validate=None if no_validate else validate_state,
                ),
            )
        )
    except SettingsError as error:
        raise _fail(str(error), 2) from None
    except InvalidImport as invalid:
        for problem in invalid.problems:
            print(f"  {problem}", file=sys.stderr)
        raise _fail("the imported config would be invalid; nothing was written") from None
    except (TransferError, StoreError) as error:
        raise _fail(str(error)) from None
    print(summary(result, dry_run), file=sys.stderr)
