"""The one way the ``xds-server`` command and its groups (``store``, ``mesh``) are made, so
every level behaves alike: help without arguments, no shell-completion options, plain
tracebacks off (errors are ours to print), no rich markup in help texts."""

from __future__ import annotations

import typer


def command_group(name: str, help_text: str) -> typer.Typer:
    return typer.Typer(
        name=name,
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
