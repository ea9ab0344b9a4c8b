"""The service mesh -> Envoy resources of the sidecars' proxy groups (see ``sidecars``)."""

from xds_server.translate.mesh.sidecars import mesh_resources

__all__ = ["mesh_resources"]
