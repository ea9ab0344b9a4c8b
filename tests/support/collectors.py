"""Trace collectors for tests: a Zipkin v2 JSON endpoint and an OTLP/gRPC TraceService.

The OTLP messages are declared here from the OpenTelemetry protocol's field numbers (only
the fields the tests read; protobuf skips the others), so no OpenTelemetry package is needed.
"""

from __future__ import annotations

import json
import threading
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


@dataclass(frozen=True)
class Span:
    service_name: str
    name: str
    tags: dict[str, str]


class ZipkinCollector:
    """``POST /api/v2/spans`` with a JSON list of spans (Zipkin v2)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self._body()
                if self.path == "/api/v2/spans":
                    for span in json.loads(body or b"[]"):
                        collector.spans.append(
                            Span(
                                span.get("localEndpoint", {}).get("serviceName", ""),
                                span.get("name", ""),
                                dict(span.get("tags", {})),
                            )
                        )
                self.send_response(202 if self.path == "/api/v2/spans" else 404)
                self.send_header("content-length", "0")
                self.end_headers()

            def _body(self) -> bytes:
                if "chunked" not in self.headers.get("transfer-encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("content-length", "0")))
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers, then the blank line
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()  # the CRLF after each chunk

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ZipkinCollector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _otlp_request_class() -> Any:
    file = descriptor_pb2.FileDescriptorProto(name="test_otlp_trace.proto", package="testotlp")
    string, message, repeated, optional = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )

    def add(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            added = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                added.type_name = type_name

    add("AnyValue", ("string_value", 1, string, optional, ""))
    add(
        "KeyValue",
        ("key", 1, string, optional, ""),
        ("value", 2, message, optional, ".testotlp.AnyValue"),
    )
    add("Resource", ("attributes", 1, message, repeated, ".testotlp.KeyValue"))
    add(
        "Span",
        ("name", 5, string, optional, ""),
        ("attributes", 9, message, repeated, ".testotlp.KeyValue"),
    )
    add("ScopeSpans", ("spans", 2, message, repeated, ".testotlp.Span"))
    add(
        "ResourceSpans",
        ("resource", 1, message, optional, ".testotlp.Resource"),
        ("scope_spans", 2, message, repeated, ".testotlp.ScopeSpans"),
    )
    add(
        "ExportTraceServiceRequest",
        ("resource_spans", 1, message, repeated, ".testotlp.ResourceSpans"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("testotlp.ExportTraceServiceRequest")
    )


def _attributes(values: Any) -> dict[str, str]:
    return {item.key: item.value.string_value for item in values}


class OtlpCollector:
    """``opentelemetry.proto.collector.trace.v1.TraceService/Export`` on 127.0.0.1."""

    SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"

    def __init__(self) -> None:
        self.spans: list[Span] = []
        request_class = _otlp_request_class()

        def export(request: Any, context: grpc.ServicerContext) -> bytes:
            for resource_spans in request.resource_spans:
                service = _attributes(resource_spans.resource.attributes).get("service.name", "")
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(Span(service, span.name, _attributes(span.attributes)))
            return b""  # an empty ExportTraceServiceResponse

        handler = grpc.method_handlers_generic_handler(
            self.SERVICE,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    export,
                    request_deserializer=request_class.FromString,
                    response_serializer=lambda response: response,
                )
            },
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def start(self) -> OtlpCollector:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None)
