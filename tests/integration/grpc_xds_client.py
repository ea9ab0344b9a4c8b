"""A proxyless gRPC client (grpcio's ``xds:///`` resolver) run as its own process.

grpcio reads ``GRPC_XDS_BOOTSTRAP`` once per process, so every client with its own bootstrap
is a subprocess: ``python -m tests.integration.grpc_xds_client TARGET METHOD COUNT
[--header NAME=VALUE] [--timeout SECONDS] [--payload-prefix P]`` makes COUNT unary calls of
``pkg.Echo/METHOD`` (raw bytes, no generated code) and prints one JSON line: the answers
(``<server>:<method>`` of ``tests.integration.http_apps.GrpcEcho``) and the status codes of
the failed calls, counted. With ``--watch`` it calls until its stdin closes instead, printing
one JSON line per call (``{"at": <epoch seconds>, "answer": ..., "error": ...}``).
``--probe TARGET...`` makes one call to each target at once (not waiting for ready: a call
ends once its channel has resolved everything down to endpoints and connected, or failed),
only so that the client subscribes everything those targets use; it prints the outcomes and
stays connected until its stdin closes.

The first call waits (``wait_for_ready``) until xDS resolution is done; the others do not,
so a client whose resources were refused shows up as failures instead of waiting forever.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from typing import Any

import grpc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("method")
    parser.add_argument("count", type=int)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--payload-prefix", default="call")
    parser.add_argument("--same-payload", action="store_true")
    parser.add_argument("--watch", action="store_true")
    parser.add_argument("--probe", nargs="*", default=None)
    args = parser.parse_args(argv)
    if args.probe is not None:
        return _probe([args.target, *args.probe], args.method, args.timeout)
    metadata = tuple(tuple(h.split("=", 1)) for h in args.header)
    answers: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    with grpc.insecure_channel(args.target) as channel:
        call = channel.unary_unary(
            f"/pkg.Echo/{args.method}",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        ready = channel.unary_unary(
            "/pkg.Echo/Say",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )
        ready(b"ready", timeout=30, wait_for_ready=True, metadata=metadata)  # resolved
        if args.watch:
            _watch(call, args.timeout, metadata)
            return 0
        for index in range(args.count):
            payload = args.payload_prefix if args.same_payload else f"{args.payload_prefix}-{index}"
            try:
                answer = call(payload.encode(), timeout=args.timeout, metadata=metadata)
                answers[answer.decode()] += 1
            except grpc.RpcError as error:
                errors[error.code().name] += 1
    json.dump({"answers": dict(answers), "errors": dict(errors)}, sys.stdout)
    print()
    return 0


def _probe(targets: list[str], method: str, timeout: float) -> int:
    channels = [grpc.insecure_channel(target) for target in targets]
    calls = [
        channel.unary_unary(
            f"/pkg.Echo/{method}",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        ).future(b"probe", timeout=timeout)  # ends once resolved through EDS, or failed
        for channel in channels
    ]
    outcome: dict[str, str] = {}
    for target, call in zip(targets, calls, strict=True):
        try:
            call.result()
            outcome[target] = "OK"
        except grpc.RpcError as error:
            outcome[target] = error.code().name
    json.dump(outcome, sys.stdout)
    print(flush=True)
    sys.stdin.read()  # stay subscribed (and answering) until told to go
    for channel in channels:
        channel.close()
    return 0


def _watch(call: Any, timeout: float, metadata: Any) -> None:
    closed = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        closed.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    while not closed.is_set():
        line: dict[str, object] = {"at": time.time()}
        try:
            line["answer"] = call(b"watch", timeout=timeout, metadata=metadata).decode()
        except grpc.RpcError as error:
            line["error"] = error.code().name
        print(json.dumps(line), flush=True)
        closed.wait(0.005)  # a steady stream of calls, not a busy loop


if __name__ == "__main__":
    sys.exit(main())
