"""The admin API's OpenAPI document: the shared response fragments (``responses``), the
body schemas (``schemas``), their registration as components (``components``), and the
checked-in document (``document``; ``python -m xds_server.admin.openapi`` prints it)."""
