"""Run the Consul double standalone (e.g. for benchmarks in a separate process).

    python -m tests.consul_double --port 0 [--dc dc1 --dc dc2] [--token T]
        [--seed-services 2000 --seed-instances 5] [--tls-cert C --tls-key K] [--no-jitter]
        [--no-consul-service] [--max-conns-per-client 200] [--session-ttl-min 10]

Prints one line, `listening http://127.0.0.1:PORT`, once it accepts connections, then serves
until SIGINT/SIGTERM. The first --dc is the local datacenter.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
import threading
from types import FrameType

from .server import ConsulDouble


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.consul_double")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS pick")
    parser.add_argument("--dc", action="append", default=[], help="repeatable; first is local")
    parser.add_argument("--token", default=None, help="require this ACL token")
    parser.add_argument("--seed-services", type=int, default=0)
    parser.add_argument("--seed-instances", type=int, default=5)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    parser.add_argument("--no-jitter", action="store_true")
    parser.add_argument("--no-consul-service", action="store_true")
    parser.add_argument("--max-conns-per-client", type=int, default=None)
    parser.add_argument("--session-ttl-min", type=float, default=10.0, help="seconds")
    args = parser.parse_args(argv)

    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    datacenters = args.dc or ["dc1"]
    double = ConsulDouble(
        datacenters=datacenters,
        local_dc=datacenters[0],
        acl_token=args.token,
        ssl_context=context,
        jitter=not args.no_jitter,
        consul_service=not args.no_consul_service,
        max_conns_per_client=args.max_conns_per_client,
        port=args.port,
        session_ttl_min=args.session_ttl_min,
    )
    if args.seed_services:
        # Seeding before start: the index bookkeeping does not need the server running.
        double.seed(args.seed_services, args.seed_instances)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with double:
        print(f"listening {double.url}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
