"""Inventory + config → translate → snapshots in the cache, once a burst of changes settles.

``SnapshotPipeline`` publishes; ``envoy_changes`` (the dry-run preview) is its twin: the same
translation of a config before and after a change, compared instead of published.
"""

from xds_server.pipeline.preview import envoy_changes, preview_for
from xds_server.pipeline.snapshots import BuildResult, SnapshotPipeline

__all__ = [
    "BuildResult",
    "SnapshotPipeline",
    "envoy_changes",
    "preview_for",
]
