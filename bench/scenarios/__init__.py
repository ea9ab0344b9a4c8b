"""The benchmark scenarios, in the order ``python -m bench`` runs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.stack import Context

Scenario = Callable[[Context], dict[str, Any]]


def scenarios() -> dict[str, Scenario]:
    from bench.scenarios import (
        bytes_per_change,
        churn,
        config_scale,
        connect_storm,
        console,
        consul_reads,
        endpoint_flap,
        fleet,
        idle,
        load_held,
        mass_change,
        mesh,
        route_change,
        sovereign,
        translate,
    )

    return {
        "translate": translate.run,
        "connect_storm": connect_storm.run,
        "endpoint_flap": endpoint_flap.run,
        "churn": churn.run,
        "route_change": route_change.run,
        "idle": idle.run,
        "bytes_per_change": bytes_per_change.run,
        "consul_reads": consul_reads.run,
        "sovereign": sovereign.run,
        "load_held": load_held.run,
        "mass_change": mass_change.run,
        "mesh": mesh.run,
        "console": console.run,
        "config_scale": config_scale.run,
        "fleet": fleet.run,
    }


NAMES = (
    "translate",
    "connect_storm",
    "endpoint_flap",
    "churn",
    "route_change",
    "idle",
    "bytes_per_change",
    "consul_reads",
    "sovereign",
    "load_held",
    "mass_change",
    "mesh",
    "console",
    "config_scale",
    "fleet",
)
