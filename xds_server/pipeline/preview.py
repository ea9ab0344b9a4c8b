"""What a config change would do to the Envoy resources of each proxy group (for dry runs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from xds_server.cache.snapshot import resource_name
from xds_server.model.config import Config
from xds_server.model.inventory import Inventory
from xds_server.model.workload import NO_IDENTITIES, Identities
from xds_server.translate import ProxyResources, translate

#: The group key for "every proxy group not named by a listener".
ALL_GROUPS = "*"


def _fingerprints(messages: Iterable[Any]) -> dict[str, bytes]:
    return {
        f"{m.DESCRIPTOR.name}/{resource_name(m)}": m.SerializeToString(deterministic=True)
        for m in messages
    }


def _diff(before: ProxyResources | None, after: ProxyResources | None) -> dict[str, list[str]]:
    old = _fingerprints(before.messages()) if before is not None else {}
    new = _fingerprints(after.messages()) if after is not None else {}
    return {
        "created": sorted(new.keys() - old.keys()),
        "updated": sorted(k for k in new.keys() & old.keys() if new[k] != old[k]),
        "deleted": sorted(old.keys() - new.keys()),
    }


def envoy_changes(
    inventory: Inventory,
    before: Config,
    after: Config,
    identities: Identities = NO_IDENTITIES,
) -> dict[str, Any]:
    """Per proxy group, the Envoy resources (``Cluster/web``…) created, updated and deleted,
    both configs translated with the current ``identities``."""
    old = translate(inventory, before, identities)
    new = translate(inventory, after, identities)
    groups: dict[str, Any] = {ALL_GROUPS: _diff(old.default, new.default)}
    for group in sorted(set(old.groups) | set(new.groups)):
        groups[group] = _diff(
            old.groups.get(group, old.default), new.groups.get(group, new.default)
        )
    changed = {name: diff for name, diff in groups.items() if any(diff.values())}
    return {"groups": changed}


def _no_identities() -> Identities:
    return NO_IDENTITIES


def preview_for(
    inventory: Callable[[], Inventory],
    identities: Callable[[], Identities] = _no_identities,
) -> Callable[[Config, Config], dict[str, Any]]:
    """``identities`` gives the mesh CA's current certificates (the preview translates with
    them, so a new ``Sidecar`` shows the listeners it would get)."""

    def preview(before: Config, after: Config) -> dict[str, Any]:
        return envoy_changes(inventory(), before, after, identities())

    return preview
