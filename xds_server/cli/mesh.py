"""``xds-server mesh rotate-root``: rotate the built-in mesh CA root of a running server.

Over REST like the other client commands (``POST /v1/mesh/rotate-root``). The server trusts
the new root everywhere first, re-issues every leaf from it, and retires the old root last;
the command returns as soon as the rotation has started (the first step), printing the trust
bundle, which then holds both roots. ``xds-server get mesh`` shows how it goes on.

Hook it into the Typer app: ``mesh.register(app, connect, dump)``: ``connect`` makes the REST
client of the command's ``--server``/``--token`` (or those given before the command),
``dump`` prints an answer as JSON or YAML when ``-o`` asks for it (``main`` owns both).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer

from xds_server.cli import render
from xds_server.cli.client import ApiClient, CliError
from xds_server.cli.typer_app import command_group

#: ``(ctx, --server, --token) -> client``.
Connect = Callable[[typer.Context, str | None, str | None], ApiClient]
#: ``(ctx, answer, -o) -> whether it printed the answer (json, yaml)``.
Dump = Callable[[typer.Context, Any, str | None], bool]

HELP = "The service mesh's CA: rotate the built-in root."


class Format(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def _root_line(role: str, root: dict[str, Any]) -> list[str]:
    return [
        role,
        str(root.get("fingerprint_sha256", "")),
        str(root.get("subject", "")),
        str(root.get("not_after", "")),
    ]


def print_rotation(status: dict[str, Any]) -> None:
    """The trust bundle (issuing root first) and the step that comes next."""
    issuing = (status.get("ca") or {}).get("fingerprint_sha256")
    target = ((status.get("rotation") or {}).get("to") or {}).get("fingerprint_sha256")
    rows = []
    for root in status.get("trust_bundle") or []:
        fingerprint = root.get("fingerprint_sha256")
        role = "issuing" if fingerprint == issuing else "new" if fingerprint == target else "old"
        rows.append(_root_line(role, root))
    render.print_table(("ROOT", "FINGERPRINT (SHA-256)", "SUBJECT", "NOT AFTER"), rows)
    rotation = status.get("rotation")
    if rotation:
        print(
            f"rotation started: next step {rotation.get('next_step')} at {rotation.get('due')}"
            " (then the old root leaves the trust bundles); follow it with 'xds-server get mesh'"
        )


def register(app: typer.Typer, connect: Connect, dump: Dump) -> None:
    """Add ``mesh rotate-root`` to the ``xds-server`` Typer app."""
    mesh_app = command_group("mesh", HELP)

    @mesh_app.command("rotate-root")
    def rotate_root(
        ctx: typer.Context,
        output: Annotated[
            Format | None, typer.Option("--output", "-o", help="table (default), json or yaml.")
        ] = None,
        server: Annotated[
            str | None, typer.Option("--server", help="The server's REST API (admin) URL.")
        ] = None,
        token: Annotated[
            str | None, typer.Option("--token", help="Sent as 'Authorization: Bearer TOKEN'.")
        ] = None,
    ) -> None:
        """Rotate the built-in mesh CA root: the new root is trusted first, every leaf is
        re-issued from it, the old root leaves the trust bundles last (no request fails)."""
        try:
            answer = connect(ctx, server, token).json("POST", "/v1/mesh/rotate-root")
        except CliError as error:
            for line in error.lines:
                print(line, file=sys.stderr)
            raise typer.Exit(error.code) from None
        if dump(ctx, answer, output.value if output is not None else None):
            return
        print_rotation(answer)

    app.add_typer(mesh_app, name="mesh")
