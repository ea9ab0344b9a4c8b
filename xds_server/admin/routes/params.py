"""Request parameters that several routers take, declared once (same name, same docs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

DryRun = Annotated[
    bool, Query(description="Validate and answer with what would change; save nothing.")
]
