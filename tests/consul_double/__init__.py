"""A test double of Consul's HTTP API (the subset xds-server uses). Test code only.

Use `ConsulDouble` from `tests.consul_double.server`, or the pytest fixtures in
`tests.consul_double.fixtures`; run `python -m tests.consul_double` for a standalone server.
"""

from .server import ConsulDouble, RecordedRequest

__all__ = ["ConsulDouble", "RecordedRequest"]
