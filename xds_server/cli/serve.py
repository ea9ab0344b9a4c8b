"""``xds-server serve``: run the control plane (argparse, flags mirrored by ``XDS_SERVER_*``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from xds_server import logs
from xds_server.settings import SettingsError, add_serve_arguments, settings_from


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xds-server serve", description="Run the xDS control plane for Envoy."
    )
    add_serve_arguments(parser)
    return parser


def run_serve(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        settings = settings_from(args)
    except SettingsError as error:
        print(f"xds-server serve: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    from xds_server.app import serve

    return asyncio.run(serve(settings))
