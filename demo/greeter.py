"""The demo's gRPC service and its proxyless client: a greeting through ``xds:///``.

    python demo/greeter.py serve --instance greeter-1 [--name greeter] [--host 127.0.0.1]
        [--port 0]
    GRPC_XDS_BOOTSTRAP=.demo/grpc-bootstrap.json python demo/greeter.py call xds:///greeter
        [--say NAME] [--timeout 10]

``serve`` is a grpcio server with one unary method, ``demo.Greeter/SayHello``: the request is
a name (UTF-8 bytes: no ``.proto``, no generated code) and the answer a JSON object naming who
answered, ``{"service": "greeter", "instance": "greeter-1", "message": "hello, NAME"}``. It
prints ``listening PORT`` once it accepts calls and stops on SIGTERM or SIGINT.

``call`` makes one such call on a channel to the given target. With an ``xds:///`` target,
gRPC's own xDS resolver (gRFC A27) reads ``GRPC_XDS_BOOTSTRAP`` (as ``xds-server bootstrap
--grpc`` prints it), asks xds-server over ADS for the listener, route, cluster and endpoints
of ``greeter`` and connects to an instance itself: no Envoy in the way. It prints the answer
and exits 0, or the gRPC status and exits 1. The first call waits until the resolver is done
(``wait_for_ready``), within ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc

SERVICE = "demo.Greeter"
METHOD = "SayHello"
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def answer(identity: dict[str, str], name: str) -> bytes:
    """The greeting, as the JSON bytes the client prints."""
    return json.dumps({**identity, "message": f"hello, {name or 'world'}"}).encode()


def serve(name: str, instance: str, host: str, port: int) -> int:
    identity = {"service": name, "instance": instance}
    # Stop signals are taken with sigwait by the main thread: block them in every thread.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
        return answer(identity, request.decode(errors="replace"))

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(say_hello)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
    )
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:
        print(f"greeter: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        return 1
    server.start()
    print(f"listening {bound}", flush=True)
    signal.sigwait(STOP_SIGNALS)
    server.stop(grace=1).wait()
    return 0


def call(target: str, say: str, timeout: float) -> int:
    if target.startswith("xds:") and not os.environ.get("GRPC_XDS_BOOTSTRAP"):
        print(
            "greeter: set GRPC_XDS_BOOTSTRAP to the bootstrap `xds-server bootstrap --grpc` "
            "prints (make demo writes .demo/grpc-bootstrap.json)",
            file=sys.stderr,
        )
        return 2
    with grpc.insecure_channel(target) as channel:
        say_hello = channel.unary_unary(
            f"/{SERVICE}/{METHOD}",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        try:
            reply: bytes = say_hello(say.encode(), timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            print(f"greeter: {target}: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(reply.decode(errors="replace"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The demo's gRPC greeter: serve, or call.")
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve", help="run a greeter instance")
    server.add_argument("--name", default="greeter", help="service name (default greeter)")
    server.add_argument("--instance", required=True, help="instance id, e.g. greeter-1")
    server.add_argument("--host", default="127.0.0.1", help="address to bind")
    server.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    client = commands.add_parser("call", help="one SayHello call, printed")
    client.add_argument("target", help="e.g. xds:///greeter (or 127.0.0.1:PORT, no xDS)")
    client.add_argument("--say", default="world", help="the name to greet")
    client.add_argument("--timeout", type=float, default=10.0, help="seconds for the call")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.name, args.instance, args.host, args.port)
    return call(args.target, args.say, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
