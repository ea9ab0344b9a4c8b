"""The failures of a request to Consul: one hierarchy, a short ``kind`` and a one-line message.

Users decide what a failure means for them: the Consul source records ``kind`` and ``message``
in its status; the Consul KV store turns any of them into ``StoreUnavailable`` (and
:class:`ConsulTooLarge` into ``InvalidChange``).
"""

from __future__ import annotations


class ConsulError(Exception):
    """A request to Consul failed; ``message`` is one line for the operator."""

    kind = "consul"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConsulTimeout(ConsulError):
    """Consul did not answer within the request's deadline."""

    kind = "timeout"


class ConsulUnreachable(ConsulError):
    """No connection to Consul (refused, reset, unknown host)."""

    kind = "unavailable"


class ConsulTlsError(ConsulError):
    """The TLS handshake with Consul failed (untrusted certificate, wrong client certificate)."""

    kind = "tls"


class ConsulAclDenied(ConsulError):
    """Consul's ACL refused the request (check ``CONSUL_HTTP_TOKEN``)."""

    kind = "acl"


class ConsulHttpError(ConsulError):
    """Consul answered with an error status (5xx, no leader …)."""

    kind = "http"


class ConsulTooLarge(ConsulHttpError):
    """Consul refused a request as too large (HTTP 413)."""


class ConsulBadResponse(ConsulError):
    """An answer that is not what Consul's API documents (shape, header, encoding)."""

    kind = "bad-response"
