"""The admin API's OpenAPI document, printed by ``python -m xds_server.admin.openapi``.

``api/openapi.json`` is this output, checked in; ``tests/unit/test_openapi_drift.py`` fails
when it differs from what the code generates. Keys are sorted so the file diffs cleanly.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from xds_server.admin.app import create_admin_app
from xds_server.admin.context import AdminContext
from xds_server.model import Inventory
from xds_server.store import MemoryStore

REGENERATE = ".venv/bin/python -m xds_server.admin.openapi > api/openapi.json"


def openapi_document() -> dict[str, Any]:
    """The document of an app over an unopened in-memory store (routes do not touch the
    store until a request comes, so nothing is opened)."""
    app = create_admin_app(AdminContext(store=MemoryStore(), inventory=Inventory))
    return app.openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render(openapi_document()))
