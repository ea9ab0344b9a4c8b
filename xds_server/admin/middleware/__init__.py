"""The admin API's ASGI middlewares: bearer tokens, the body size limit, the revision header
and request metrics."""
