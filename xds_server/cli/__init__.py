"""The ``xds-server`` command (console script ``xds_server.cli:main``)."""

from xds_server.cli.main import main
from xds_server.cli.serve import build_parser

__all__ = ["build_parser", "main"]
