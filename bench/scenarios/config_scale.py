"""config_scale: what a write costs as the config grows (100 / 1,000 / 5,000 routes).

Per size N: N services with one instance each, one listener, and N routes on it (one
service per route, each on its own hostname ``rNNNN.example.com``, so the listener's
RouteConfiguration has N virtual hosts). Route ``k`` sends ``/svc-k`` to ``svc-k``; a write
gives it (or changes) a second rule, ``/probe`` answered with a redirect to ``vJ.example.net``,
so a real Envoy in front shows when it serves the write (the ``Location`` of ``GET /probe``),
without a backend and without touching any cluster.

Measured, on a server that starts with the listener only:

- ``POST /v1/apply`` of the N routes: until it is answered, and until Envoy serves the last;
- single ``PUT /v1/routes/{name}`` (to a rotating route), one after another: p50/p99 of the
  PUT, and of PUT sent → Envoy serving it (polled every few milliseconds);
- event-loop lag while the writes run, measured inside the server process
  (``bench.loop_lag``: a task sleeping 10 ms records its overshoot), p50/p99/max.

Run with ``make bench ARGS=config_scale`` or on its own::

    python -m bench.scenarios.config_scale [--routes 100,1000,5000] [--writes 30] [--quick]

It writes ``bench/results/config_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench import report
from bench.loop_lag import read as read_lag
from bench.procs import ServerUnderTest, free_port, stop_all
from bench.stack import REPO, Context
from bench.workload import AdminClient, seed_store, service_name

SIZES = (100, 1000, 5000)
LISTENER = "public"
#: Targets of issue 18 at 5,000 routes.
TARGET_PUT_P50 = 0.050
TARGET_APPLY = 2.0
TARGET_SERVED_P50 = 0.300
TARGET_LAG_P99 = 0.100
#: How often Envoy is asked whether it serves a write yet.
POLL = 0.005
SERVED_TIMEOUT = 60.0
#: Quiet between two writes (the pipeline's debounce is 100 ms).
GAP = 0.2


def route_name(index: int) -> str:
    return f"r{index:04d}"


def route_document(index: int, version: int | None = None) -> dict[str, Any]:
    """Route ``index``: ``/svc-k`` → ``svc-k``; with ``version``, also ``/probe`` redirected
    to ``v{version}.example.net`` (what a write changes)."""
    service = service_name(index)
    rules: list[dict[str, Any]] = [
        {"matches": [{"path": {"prefix": f"/{service}"}}], "backends": [{"service": service}]}
    ]
    if version is not None:
        rules.append(
            {
                "matches": [{"path": {"exact": "/probe"}}],
                "filters": {"redirect": {"hostname": f"v{version}.example.net"}},
            }
        )
    return {
        "kind": "Route",
        "name": route_name(index),
        "spec": {
            "listeners": [LISTENER],
            "hostnames": [f"{route_name(index)}.example.com"],
            "rules": rules,
        },
    }


def apply(admin: AdminClient, documents: list[dict[str, Any]]) -> None:
    """``POST /v1/apply`` in compact JSON (5,000 routes stay under the 1 MiB body limit)."""
    request = urllib.request.Request(
        admin.base + "/v1/apply",
        data=json.dumps(documents, separators=(",", ":")).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=admin.timeout) as response:
        response.read()


def listener_document(port: int) -> dict[str, Any]:
    return {
        "kind": "Listener",
        "name": LISTENER,
        "spec": {"address": "127.0.0.1", "port": port, "access_log": False},
    }


def registry(services: int, port: int) -> dict[str, Any]:
    """Every service one instance on a closed local port (nothing is forwarded anyway)."""
    endpoint = {"address": "127.0.0.1", "port": port}
    return {"services": {service_name(i): {"endpoints": [endpoint]} for i in range(services)}}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def answer(port: int, index: int, path: str) -> tuple[int, str | None]:
    """Envoy's status and ``Location`` for ``GET path`` on route ``index``'s hostname."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"host": f"{route_name(index)}.example.com"}
    )
    try:
        with _OPENER.open(request, timeout=5) as response:
            return response.status, response.headers.get("location")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("location")
    except OSError:
        return 0, None


def wait_served(port: int, index: int, version: int | None, since: float) -> float:
    """Seconds from ``since`` until Envoy serves route ``index``: with ``version``, redirects
    its ``/probe`` to ``v{version}``; without, routes ``/svc-k`` (503: the instance's port is
    closed) instead of answering 404 (no such virtual host)."""
    expected = f"v{version}.example.net"
    path = "/probe" if version is not None else f"/{service_name(index)}"
    deadline = time.monotonic() + SERVED_TIMEOUT
    while time.monotonic() < deadline:
        status, found = answer(port, index, path)
        if version is None and status not in (0, 404):
            return time.monotonic() - since
        if version is not None and found is not None and expected in found:
            return time.monotonic() - since
        time.sleep(POLL)
    raise TimeoutError(f"Envoy did not serve {route_name(index)} v{version} in {SERVED_TIMEOUT}s")


def _envoy(ads: str) -> Any:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.support.envoy import Envoy, bootstrap

    return Envoy(bootstrap(int(ads.rsplit(":", 1)[1]), node_id="config-scale")).start()


def _server(ctx: Context, n: int, listener_port: int) -> tuple[ServerUnderTest, Path]:
    """The server (under the lag probe) with the listener only; N services in its registry."""
    work = ctx.work / f"config-scale-{n}"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "registry.yaml"
    path.write_text(yaml.safe_dump(registry(n, free_port()), sort_keys=True))
    store = work / "store.db"
    seed_store(store, [listener_document(listener_port)])
    lag = work / "loop-lag.txt"
    profile = ctx.results / f"profile-config-scale-{n}.txt" if ctx.profile else None
    server = ServerUnderTest(
        f"static:{path}", f"sqlite:{store}", work / "server.log", profile=profile
    )
    args = list(server.process.args)
    at = args.index("xds_server")
    server.process.args = [*args[: at - 1], "-m", "bench.loop_lag", str(lag), *args[at + 1 :]]
    server.process.cwd = REPO
    return server, lag


def one_size(ctx: Context, n: int, writes: int) -> dict[str, Any]:
    port = free_port()
    server, lag_file = _server(ctx, n, port)
    server.start()
    envoy = None
    try:
        envoy = _envoy(server.ads)
        admin = AdminClient(server.admin, timeout=120)
        documents = [route_document(i) for i in range(n)]
        ctx.say(f"config_scale: {n} routes: POST /v1/apply")
        at = time.monotonic()
        apply(admin, documents)
        apply_s = time.monotonic() - at
        apply_served_s = wait_served(port, n - 1, None, at)
        time.sleep(1.0)
        ctx.say(f"config_scale: {n} routes: {writes} PUT /v1/routes/…")
        put_s: list[float] = []
        served_s: list[float] = []
        start = time.monotonic()
        for k in range(writes):
            index = (k * 7919) % n
            version = k + 1
            sent = time.monotonic()
            admin.put(route_document(index, version))
            put_s.append(time.monotonic() - sent)
            served_s.append(wait_served(port, index, version, sent))
            time.sleep(GAP)
        end = time.monotonic()
        lag = read_lag(lag_file, start, end) if _flushed(lag_file, end) else []
        window = server.sampler.window(start, end) if server.sampler is not None else {}
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()
    return {
        "routes": n,
        "writes": writes,
        "apply_s": apply_s,
        "apply_served_s": apply_served_s,
        "first_put_after_apply_s": put_s[0] if put_s else None,
        "put_s": report.stats(put_s),
        "write_served_s": report.stats(served_s),
        "writes_per_s": writes / max(end - start, 1e-9),
        "loop_lag_s": report.stats(lag),
        "loop_lag_samples": len(lag),
        "server": window,
    }


def _flushed(path: Path, end: float, wait: float = 2.0) -> bool:
    """Wait until the probe has flushed samples past ``end``."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if read_lag(path, end, float("inf")):
            return True
        time.sleep(0.1)
    return path.exists()


def run(ctx: Context, sizes: tuple[int, ...] = SIZES, writes: int | None = None) -> dict[str, Any]:
    count = writes if writes is not None else (10 if ctx.quick else 30)
    runs = [one_size(ctx, n, count) for n in sizes]
    for r in runs:
        ctx.say(
            f"config_scale: {r['routes']:>5} routes: apply {report.fmt(r['apply_s'], 's')} "
            f"(served {report.fmt(r['apply_served_s'], 's')}); PUT p50 "
            f"{report.fmt(r['put_s'].get('p50'), 's')} "
            f"p99 {report.fmt(r['put_s'].get('p99'), 's')}; "
            f"write → Envoy p50 {report.fmt(r['write_served_s'].get('p50'), 's')}; loop lag p99 "
            f"{report.fmt(r['loop_lag_s'].get('p99'), 's')} max "
            f"{report.fmt(r['loop_lag_s'].get('max'), 's')}"
        )
    targets = []
    for r in runs:
        n = r["routes"]
        put50 = r["put_s"].get("p50")
        targets.append(
            report.target(
                f"PUT /v1/routes/… at {n} routes, p50",
                f"≤ {TARGET_PUT_P50 * 1000:.0f} ms at 5,000" if n == 5000 else "reported",
                f"{report.fmt(put50, 's')} (p99 {report.fmt(r['put_s'].get('p99'), 's')})",
                put50 is not None and put50 <= TARGET_PUT_P50 if n == 5000 else None,
            )
        )
    big = next((r for r in runs if r["routes"] == 5000), None)
    if big is not None:
        served = big["write_served_s"].get("p50")
        lag99 = big["loop_lag_s"].get("p99")
        targets += [
            report.target(
                "POST /v1/apply of 5,000 routes",
                f"≤ {TARGET_APPLY:.0f} s",
                f"{report.fmt(big['apply_s'], 's')} (Envoy serving all: "
                f"{report.fmt(big['apply_served_s'], 's')})",
                big["apply_s"] <= TARGET_APPLY,
            ),
            report.target(
                "route write → Envoy serving it, 5,000 routes, p50",
                f"≤ {TARGET_SERVED_P50 * 1000:.0f} ms",
                report.fmt(served, "s"),
                served is not None and served <= TARGET_SERVED_P50,
            ),
            report.target(
                "event-loop lag while writes run, 5,000 routes, p99",
                f"≤ {TARGET_LAG_P99 * 1000:.0f} ms",
                f"{report.fmt(lag99, 's')} (max {report.fmt(big['loop_lag_s'].get('max'), 's')})",
                lag99 is not None and lag99 <= TARGET_LAG_P99,
            ),
        ]
    return {"runs": runs, "targets": targets}


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scenarios.config_scale")
    parser.add_argument("--routes", type=_sizes, default=SIZES, help="e.g. 100,1000,5000")
    parser.add_argument("--writes", type=int, default=None, help="PUTs per size (30; quick 10)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy the server")
    parser.add_argument("--name", default="config_scale", help="results file name")
    parser.add_argument(
        "--results", type=Path, default=Path(__file__).resolve().parent.parent / "results"
    )
    args = parser.parse_args(argv)
    ctx = Context(proxies=[1], quick=args.quick, results=args.results, profile=args.profile)
    started = time.monotonic()
    try:
        data = run(ctx, args.routes, args.writes)
    finally:
        stop_all()
        ctx.cleanup()
    data["elapsed_s"] = time.monotonic() - started
    data["options"] = {"routes": list(args.routes), "writes": args.writes, "quick": args.quick}
    path = report.write(args.name, data, ctx.results)
    report.print_targets(args.name, data["targets"])
    print(f"→ {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
