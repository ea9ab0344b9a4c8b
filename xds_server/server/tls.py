"""TLS on the ADS port, client certificates, and binding each proxy to its certificate.

- ``AdsTls(cert, key)``: the ADS port speaks TLS (gRPC over HTTP/2 with ALPN ``h2``).
- ``client_ca``: every client must present a certificate signed by this CA, or the handshake
  fails (the RPC never starts).
- ``verify_node``: the node a stream announces must be named by a subject alternative name
  (DNS, URI, e-mail or IP) of its client certificate, else the stream ends with
  ``PERMISSION_DENIED`` before anything is sent: ``"group"`` (the default of
  ``--ads-verify-node``) checks ``node.cluster``, the proxy group, which decides what the
  proxy receives, secrets included; ``"id"`` checks ``node.id`` (which does **not** stop a
  proxy from claiming another group); ``"id+group"`` checks both. CSDS, which shows what each
  proxy was sent (secrets included), then only reports the proxies the caller's certificate
  names.
- Certificates are re-read when their files change (checked at each new TLS handshake), so a
  rotated certificate is used without a restart; streams already open keep theirs.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger("xds_server.server.tls")

SAN_PROPERTY = "x509_subject_alternative_name"
CSDS_PREFIX = "/envoy.service.status.v3.ClientStatusDiscoveryService/"
VERIFY_MODES = ("group", "id", "id+group")

Context = grpc.aio.ServicerContext[Any, Any]


def _read(path: str) -> bytes:
    data = Path(path).read_bytes()
    if b"-----BEGIN" not in data:
        raise ValueError(f"{path}: not a PEM file")
    return data


def _stamp(paths: Iterable[str | None]) -> tuple[tuple[int, int] | None, ...]:
    stamps: list[tuple[int, int] | None] = []
    for path in paths:
        if path is None:
            stamps.append(None)
            continue
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
            continue
        stamps.append((st.st_mtime_ns, st.st_size))
    return tuple(stamps)


@dataclass
class AdsTls:
    """TLS settings of the ADS port; see the module docstring."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    verify_node: str | None = None
    _stamps: tuple[tuple[int, int] | None, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.verify_node is not None and self.verify_node not in VERIFY_MODES:
            raise ValueError(f"verify_node must be one of {VERIFY_MODES}, not {self.verify_node!r}")
        if self.verify_node is not None and self.client_ca_file is None:
            raise ValueError("verifying nodes needs client certificates (a client CA)")

    def check(self) -> None:
        """Read the files now: raises ``ValueError`` with a clear reason (missing, unreadable,
        not PEM, a key that does not match the certificate)."""
        try:
            self._configuration()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file:
                context.load_verify_locations(self.client_ca_file)
        except ssl.SSLError as error:
            raise ValueError(
                f"ADS TLS: {self.cert_file} / {self.key_file} / {self.client_ca_file}: {error}"
            ) from None
        except OSError as error:
            raise ValueError(f"ADS TLS: {error.filename}: {error.strerror}") from None

    @property
    def _files(self) -> tuple[str | None, ...]:
        return (self.cert_file, self.key_file, self.client_ca_file)

    def _configuration(self) -> Any:
        key, cert = _read(self.key_file), _read(self.cert_file)
        ca = _read(self.client_ca_file) if self.client_ca_file else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials; reads the files now (raises ``OSError``/``ValueError``) and
        again whenever they change."""
        self._stamps = _stamp(self._files)
        initial = self._configuration()

        def fetch() -> Any:
            stamps = _stamp(self._files)
            if stamps == self._stamps:
                return None  # unchanged: keep the current configuration
            try:
                configuration = self._configuration()
            except (OSError, ValueError) as error:
                log.error("ADS TLS: keeping the current certificate: %s", error)
                return None
            self._stamps = stamps
            log.info("ADS TLS: certificate files changed, using the new ones")
            return configuration

        return grpc.dynamic_ssl_server_credentials(
            initial, fetch, require_client_authentication=self.client_ca_file is not None
        )

    def wrap(self, handlers: Iterable[grpc.GenericRpcHandler]) -> list[grpc.GenericRpcHandler]:
        """``handlers``, with node identity checks when ``verify_node`` is set."""
        handlers = list(handlers)
        if self.verify_node is None:
            return handlers
        return [NodeIdentityCheck(handlers, self.verify_node)]


def peer_names(context: Context) -> frozenset[str]:
    """The subject alternative names of the peer's certificate (empty without one)."""
    names = context.auth_context().get(SAN_PROPERTY, [])
    return frozenset(
        n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names
    )


def node_allowed(mode: str, node_id: str, group: str, names: frozenset[str]) -> bool:
    if mode == "group":
        return group in names
    if mode == "id":
        return node_id in names
    return node_id in names and group in names


class NodeIdentityCheck(grpc.GenericRpcHandler):
    """Wraps the xDS and CSDS handlers: see the module docstring."""

    def __init__(self, handlers: list[grpc.GenericRpcHandler], mode: str) -> None:
        self._handlers = handlers
        self._mode = mode

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        for generic in self._handlers:
            handler = generic.service(handler_call_details)
            if handler is not None:
                return self._wrap(str(handler_call_details.method), handler)
        return None

    # -- the checks --------------------------------------------------------------------------

    def _refusal(self, node: Any, context: Context) -> str | None:
        names = peer_names(context)
        node_id, group = str(node.id), str(node.cluster)
        if node_allowed(self._mode, node_id, group, names):
            return None
        shown = ", ".join(sorted(names)) or "none"
        what = {"group": f"group {group!r}", "id": f"node id {node_id!r}"}.get(
            self._mode, f"node id {node_id!r} and group {group!r}"
        )
        log.warning(
            "ADS: refused node=%s group=%s peer=%s: certificate names %s",
            node_id,
            group,
            context.peer(),
            shown,
        )
        return f"the client certificate does not name {what} (its names: {shown})"

    def _visible(self, node: Any, names: frozenset[str]) -> bool:
        return node_allowed(self._mode, str(node.id), str(node.cluster), names)

    # -- wrapping ------------------------------------------------------------------------------

    def _wrap(self, method: str, handler: Any) -> Any:
        if method.startswith(CSDS_PREFIX):
            return self._wrap_csds(handler)
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._guard_stream(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if not handler.request_streaming and not handler.response_streaming:
            return grpc.unary_unary_rpc_method_handler(
                self._guard_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # no such xDS method

    def _guard_stream(
        self, inner: Callable[[AsyncIterator[Any], Context], AsyncIterator[Any]]
    ) -> Callable[[AsyncIterator[Any], Context], AsyncIterator[Any]]:
        async def guarded(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            iterator = aiter(requests)
            try:
                first = await anext(iterator)
            except StopAsyncIteration:
                return
            # The first request carries the node (the stream rejects one without it).
            if first.HasField("node"):
                refusal = self._refusal(first.node, context)
                if refusal is not None:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
            async for response in inner(_prepend(first, iterator), context):
                yield response

        return guarded

    def _guard_unary(
        self, inner: Callable[[Any, Context], Awaitable[Any]]
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        async def guarded(request: Any, context: Context) -> Any:
            refusal = self._refusal(request.node, context)
            if refusal is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
            return await inner(request, context)

        return guarded

    def _wrap_csds(self, handler: Any) -> Any:
        def only_visible(response: Any, context: Context) -> Any:
            names = peer_names(context)
            kept = [c for c in response.config if self._visible(c.node, names)]
            del response.config[:]
            response.config.extend(kept)
            return response

        if handler.response_streaming:
            inner_stream = handler.stream_stream

            async def stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
                async for response in inner_stream(requests, context):
                    yield only_visible(response, context)

            return grpc.stream_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        inner_unary = handler.unary_unary

        async def fetch(request: Any, context: Context) -> Any:
            return only_visible(await inner_unary(request, context), context)

        return grpc.unary_unary_rpc_method_handler(
            fetch,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item
