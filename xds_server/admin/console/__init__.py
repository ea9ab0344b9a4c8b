"""The web console at ``/ui/``: server-rendered page shells, a little JavaScript, no CDN.

The pages hold no data: every figure on them is read by the browser from the REST API with
the operator's token (kept in ``sessionStorage``, for the tab only), so the console needs no
session, no cookie and no privilege of its own, and a read token sees everything while every
write is refused by the API itself. See ``docs/console.md``.
"""

from xds_server.admin.console.inventory import services_router
from xds_server.admin.console.routes import CONSOLE_PREFIX, console_router

__all__ = ["CONSOLE_PREFIX", "console_router", "services_router"]
