"""The ``xds-server`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from xds_server import logs
from xds_server.settings import SettingsError, add_serve_arguments, settings_from


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xds-server", description="An xDS control plane for Envoy."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the control plane")
    add_serve_arguments(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = settings_from(args)
        except SettingsError as error:
            print(f"xds-server serve: {error}", file=sys.stderr)
            return 2
        logs.configure(settings.log_level, settings.log_format)
        from xds_server.app import serve

        return asyncio.run(serve(settings))
    return 2


if __name__ == "__main__":
    sys.exit(main())
