"""The ``xds-server`` command (console script ``xds_server.cli:main``)."""

from xds_server.cli.main import main

__all__ = ["main"]
