"""Proxy groups: which listeners each group's Envoys get.

A listener without ``groups`` goes to every group; one with ``groups`` only to those.
``None`` stands for "any group no listener names", which gets the all-groups listeners.
"""

from __future__ import annotations

from xds_server.model.config import Config


def named_groups(config: Config) -> tuple[str, ...]:
    """Every group some listener names, sorted."""
    return tuple(
        sorted({group for entry in config.listeners.values() for group in entry.spec.groups})
    )


def listeners_of(config: Config, group: str | None) -> tuple[str, ...]:
    """The names of the listeners the Envoys of ``group`` get (``None``: an unnamed group)."""
    return tuple(
        name
        for name, entry in config.listeners.items()
        if not entry.spec.groups or (group is not None and group in entry.spec.groups)
    )
