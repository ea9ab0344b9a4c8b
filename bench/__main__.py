"""``python -m bench [scenario…] [--proxies N[,N…]] [--quick]``: run the benchmarks.

Each scenario writes ``bench/results/<scenario>.json`` (figures and machine info), a PNG
plot where it has latencies, and prints a short table; a summary of every target follows.
Everything started (servers, the baseline, Sovereign, simulator workers) is stopped at the
end, on errors and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.procs import stop_all
from bench.scenarios import NAMES, scenarios
from bench.stack import Context
from bench.workload import Workload


def _proxies(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,…, got {text!r}") from None
    if not values or any(v < 1 or v > 20_000 for v in values):
        raise argparse.ArgumentTypeError("proxy counts must be between 1 and 20000")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of xds-server (docs/performance.md)."
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="scenario", help=f"any of: {', '.join(NAMES)} (default all)"
    )
    parser.add_argument(
        "--proxies", type=_proxies, default=[1000], help="simulated Envoys, e.g. 1000 or 1000,5000"
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer repetitions")
    parser.add_argument("--workers", type=int, default=2, help="simulator processes (default 2)")
    parser.add_argument("--streams-per-channel", type=int, default=100)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints per service")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the server under py-spy; writes results/profile-<stack>.txt (collapsed stacks)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser


def _merge_summary(path: Path, summary: list[dict[str, Any]]) -> None:
    """Keep the other scenarios' lines from earlier runs; replace those run now."""
    ran = {s["scenario"] for s in summary}
    kept: list[dict[str, Any]] = []
    if path.exists():
        try:
            kept = [s for s in json.loads(path.read_text()) if s.get("scenario") not in ran]
        except (ValueError, AttributeError):
            kept = []
    order = {name: i for i, name in enumerate(NAMES)}
    merged = sorted(kept + summary, key=lambda s: order.get(s.get("scenario", ""), 99))
    path.write_text(json.dumps(merged, indent=2) + "\n")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = [s for s in args.scenarios if s not in NAMES]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(NAMES)}")
        return 2
    chosen = args.scenarios or list(NAMES)
    ctx = Context(
        proxies=args.proxies,
        quick=args.quick,
        workers=max(1, args.workers),
        streams_per_channel=max(1, args.streams_per_channel),
        results=args.results,
        profile=args.profile,
        keep=args.keep,
        workload=replace(Workload(), services=args.services, endpoints=args.endpoints),
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Even when started with SIGINT ignored (a background job), Ctrl-C stops the run cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    runners = scenarios()
    summary: list[dict[str, Any]] = []
    failed: list[str] = []
    ctx.say(f"work directory {ctx.work}; results in {ctx.results}")
    try:
        for name in chosen:
            started = time.monotonic()
            try:
                data = runners[name](ctx)
            except KeyboardInterrupt:
                raise
            except Exception as error:
                traceback.print_exc()
                failed.append(name)
                data = {"error": f"{type(error).__name__}: {error}", "targets": []}
            data["elapsed_s"] = time.monotonic() - started
            data["options"] = {
                "proxies": ctx.proxies,
                "quick": ctx.quick,
                "workers": ctx.workers,
                "streams_per_channel": ctx.streams_per_channel,
                "services": ctx.workload.services,
                "endpoints_per_service": ctx.workload.endpoints,
            }
            path = report.write(name, data, ctx.results)
            report.print_targets(name, data.get("targets", []))
            if data.get("skipped"):
                print(f"skipped: {data['skipped']}")
            print(f"→ {path}")
            summary.extend({"scenario": name, **t} for t in data.get("targets", []))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        stop_all()
        ctx.cleanup()
    if summary:
        print("\n== summary")
        print(
            report.table(
                [
                    (
                        s["scenario"],
                        s["target"],
                        s["goal"],
                        str(s["value"]),
                        {True: "met", False: "NOT met", None: ""}[s["met"]],
                    )
                    for s in summary
                ],
                ("scenario", "figure", "target", "measured", ""),
            )
        )
        _merge_summary(ctx.results / "summary.json", summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
