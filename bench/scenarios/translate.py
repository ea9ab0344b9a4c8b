"""translate: in-process cost of ``translate(inventory, config)`` + ``Snapshot.build``.

- full (cold): every per-item cache cleared, nothing to reuse: what the first build costs;
- full (warm): the same inputs again, ``previous`` snapshot given, per-item caches warm but
  the last translation forgotten (else the same inputs are answered by it);
- one service changed: one endpoint of one service made unhealthy, ``previous`` given —
  the pipeline's path for an endpoint change.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from typing import Any

from bench import report
from bench.stack import Context

TARGET_FULL = 0.050
TARGET_ONE = 0.002


def _clear_caches() -> None:
    import importlib
    import inspect

    _forget_last_translation()
    package = importlib.import_module("xds_server.translate")
    for module_name in (
        "clusters",
        "endpoints",
        "listeners",
        "routes",
        "actions",
        "retries",
        "matches",
        "headers",
        "rewrites",
        "hostnames",
        "precedence",
    ):
        try:
            module = importlib.import_module(f"{package.__name__}.{module_name}")
        except ImportError:
            continue
        for _, member in inspect.getmembers(module):
            clear = getattr(member, "cache_clear", None)
            if callable(clear):
                clear()


def _forget_last_translation() -> None:
    """The warm row re-translates with warm per-item caches: without this, the same inputs
    again would be answered by the last translation itself (where the tree has one)."""
    import importlib

    module = importlib.import_module("xds_server.translate.translation")
    clear = getattr(module, "clear_caches", None)
    if callable(clear):
        clear()


def _time(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    times = []
    result = None
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return times, result


def _by_type() -> Callable[[Any], Any]:
    """What the pipeline hands ``Snapshot.build`` (per type URL, where it does so)."""
    try:
        from xds_server.pipeline.snapshots import by_type
    except ImportError:  # older trees: the flat messages
        return lambda resources: resources.messages()
    found: Callable[[Any], Any] = by_type
    return found


def run(ctx: Context) -> dict[str, Any]:
    from xds_server.cache.snapshot import Snapshot
    from xds_server.model.inventory import Health
    from xds_server.translate import translate

    messages = _by_type()

    w = ctx.workload
    repeat = 5 if ctx.quick else 20
    ctx.say(f"translate: {w.services} services x {w.endpoints} endpoints, {repeat} rounds each")
    inventory = w.inventory()
    config = w.config()

    def full_cold() -> tuple[float, float]:
        _clear_caches()
        t0 = time.perf_counter()
        translation = translate(inventory, config)
        t1 = time.perf_counter()
        Snapshot.build(messages(translation.default))
        return t1 - t0, time.perf_counter() - t1

    cold_parts = [full_cold() for _ in range(repeat)]
    previous = Snapshot.build(messages(translate(inventory, config).default))

    def full_warm() -> tuple[float, float]:
        _forget_last_translation()
        t0 = time.perf_counter()
        translation = translate(inventory, config)
        t1 = time.perf_counter()
        Snapshot.build(messages(translation.default), previous=previous)
        return t1 - t0, time.perf_counter() - t1

    warm_parts = [full_warm() for _ in range(repeat)]

    # One service changes: alternate one endpoint between unhealthy and healthy, as a flap.
    name = sorted(inventory.services)[0]
    original = inventory.services[name]
    endpoints = list(original.endpoints)
    endpoints[0] = dataclasses.replace(endpoints[0], health=Health.UNHEALTHY)
    flapped = dataclasses.replace(original, endpoints=tuple(endpoints))
    variants = [inventory.with_service(flapped), inventory]
    state = {"previous": previous}
    one_parts: list[tuple[float, float]] = []
    for k in range(repeat * 2):
        current = variants[k % 2]
        gc.collect()
        t0 = time.perf_counter()
        translation = translate(current, config)
        t1 = time.perf_counter()
        snapshot = Snapshot.build(messages(translation.default), previous=state["previous"])
        t2 = time.perf_counter()
        state["previous"] = snapshot
        one_parts.append((t1 - t0, t2 - t1))

    def summary(parts: list[tuple[float, float]]) -> dict[str, Any]:
        return {
            "total_s": report.stats(a + b for a, b in parts),
            "translate_s": report.stats(a for a, _ in parts),
            "snapshot_build_s": report.stats(b for _, b in parts),
        }

    cold, warm, one = summary(cold_parts), summary(warm_parts), summary(one_parts)
    targets = [
        report.target(
            f"full translation of {w.services} services (cold caches)",
            f"≤ {TARGET_FULL * 1000:.0f} ms",
            f"{cold['total_s']['p50'] * 1000:.1f} ms (translate "
            f"{cold['translate_s']['p50'] * 1000:.1f} + build "
            f"{cold['snapshot_build_s']['p50'] * 1000:.1f})",
            cold["total_s"]["p50"] <= TARGET_FULL,
        ),
        report.target(
            f"full translation of {w.services} services (warm per-item caches)",
            f"≤ {TARGET_FULL * 1000:.0f} ms",
            f"{warm['total_s']['p50'] * 1000:.1f} ms (translate "
            f"{warm['translate_s']['p50'] * 1000:.1f} + build "
            f"{warm['snapshot_build_s']['p50'] * 1000:.1f})",
            warm["total_s"]["p50"] <= TARGET_FULL,
        ),
        report.target(
            "one-service change (translate + build with previous)",
            f"≤ {TARGET_ONE * 1000:.0f} ms",
            f"{one['total_s']['p50'] * 1000:.2f} ms (translate "
            f"{one['translate_s']['p50'] * 1000:.2f} + build "
            f"{one['snapshot_build_s']['p50'] * 1000:.2f})",
            one["total_s"]["p50"] <= TARGET_ONE,
        ),
    ]
    return {
        "services": w.services,
        "endpoints_per_service": w.endpoints,
        "routes": w.routes,
        "full_cold": cold,
        "full_warm": warm,
        "one_service_change": one,
        "targets": targets,
    }
