"""Random sequences of commits and rollbacks agree with a model of a few lines.

The model keeps, per revision, ``{(kind, name): (spec, created_revision, revision)}``. After
the sequence, ``current()``, every ``state_at(r)`` and (for SQLite) the reopened store must
match it.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xds_server.store import (
    Change,
    ConfigState,
    MemoryStore,
    NotFound,
    SqliteStore,
)
from xds_server.store.backend import BaseStore

Key = tuple[str, str]
ModelDoc = tuple[dict[str, Any], int, int]  # spec, created_revision, revision
Model = dict[Key, ModelDoc]

KEYS = [("Route", "a"), ("Route", "b"), ("Listener", "a"), ("TlsPolicy", "t")]
specs = st.one_of(st.none(), st.integers(0, 2).map(lambda v: {"v": v}))
commits = st.dictionaries(st.sampled_from(KEYS), specs, max_size=3).map(lambda d: ("commit", d))
rollbacks = st.integers(0, 1_000).map(lambda i: ("rollback", i))
steps = st.lists(st.one_of(commits, rollbacks), max_size=12)


def view(state: ConfigState) -> Model:
    return {
        key: (doc.spec, doc.created_revision, doc.revision) for key, doc in state.documents.items()
    }


def model_commit(states: list[Model], changes: dict[Key, dict[str, Any] | None]) -> bool:
    """Apply to the model; False if the commit must fail (a delete of a missing document)."""
    old = states[-1]
    if any(spec is None and key not in old for key, spec in changes.items()):
        return False
    revision = len(states)
    new = dict(old)
    for key, spec in changes.items():
        if spec is None:
            del new[key]
        elif key not in old:
            new[key] = (spec, revision, revision)
        elif old[key][0] != spec:
            new[key] = (spec, old[key][1], revision)
    if new != old:
        states.append(new)
    return True


def model_rollback(states: list[Model], target: int) -> None:
    old, want = states[-1], states[target]
    revision = len(states)
    new: Model = {}
    for key, (spec, created, _) in want.items():
        have = old.get(key)
        same = have is not None and have[:2] == (spec, created)
        new[key] = have if same and have is not None else (spec, created, revision)
    if new != old:
        states.append(new)


async def run(store: BaseStore, sequence: list[tuple[str, Any]], reopen: bool) -> None:
    states: list[Model] = [{}]
    await store.open()
    try:
        for action, arg in sequence:
            if action == "commit":
                changes = [Change(kind, name, spec) for (kind, name), spec in arg.items()]
                if model_commit(states, arg):
                    await store.commit(changes, actor="prop")
                else:
                    with pytest.raises(NotFound):
                        await store.commit(changes, actor="prop")
            else:
                target = arg % len(states)
                model_rollback(states, target)
                await store.rollback(target, actor="prop")
            assert store.current().revision == len(states) - 1
            assert view(store.current()) == states[-1]
        if reopen:
            await store.close()
            await store.open()
            assert view(store.current()) == states[-1]
        for revision, expected in enumerate(states):
            assert view(await store.state_at(revision)) == expected
        history = await store.history(limit=10_000)
        assert sorted({e.revision for e in history}) == list(range(1, len(states)))
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=steps)
def test_commits_state_at_and_rollback_agree_with_a_model(
    backend: str, sequence: list[tuple[str, Any]]
) -> None:
    if backend == "memory":
        asyncio.run(run(MemoryStore(), sequence, reopen=True))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(SqliteStore(Path(tmp) / "config.db"), sequence, reopen=True))
