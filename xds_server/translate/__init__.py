"""Pure translation of inventory + operator config into Envoy resources per proxy group."""

from xds_server.translate.output import ProxyResources, Translation
from xds_server.translate.translation import translate

__all__ = ["ProxyResources", "Translation", "translate"]
