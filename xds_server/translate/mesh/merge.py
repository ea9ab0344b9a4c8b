"""A sidecar group's resources: its edge resources merged with its mesh resources, memoised
per group so that an unchanged group is handed over as the very same object (the pipeline
then reuses its snapshot without looking into it)."""

from __future__ import annotations

from xds_server.translate.output import ProxyResources

#: Per group: (edge, mesh, merged) of the last merge.
_MERGED: dict[str, tuple[ProxyResources, ProxyResources, ProxyResources]] = {}
_LIMIT = 16_384
_NOTHING = ProxyResources()


def merged(group: str, edge: ProxyResources, mesh: ProxyResources) -> ProxyResources:
    """``edge.merged(mesh)``, the same object as last time if both are unchanged. ``mesh``
    comes from the mesh's memo (the same object while unchanged: compared by identity); the
    edge resources are rebuilt by each translation (compared by value; usually empty or the
    very same messages)."""
    hit = _MERGED.get(group)
    if hit is not None and hit[1] is mesh and hit[0] == edge:
        return hit[2]
    # No edge resources (a plain sidecar): the mesh's, already sorted by name and unique.
    result = mesh if edge == _NOTHING else edge.merged(mesh)
    if len(_MERGED) >= _LIMIT:
        _MERGED.clear()
    _MERGED[group] = (edge, mesh, result)
    return result


def clear_cache() -> None:
    _MERGED.clear()
