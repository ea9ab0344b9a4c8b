"""Hypothesis strategies for small inventories, shared by the memo property tests (a memoised
translation must equal a translation from nothing, whatever the sequence of changes)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from xds_server.model import Endpoint, Health, Service


def endpoint(index: int, healthy: bool, version: str, port: int) -> Endpoint:
    return Endpoint(
        f"10.0.0.{index + 1}",
        port,
        health=Health.HEALTHY if healthy else Health.UNHEALTHY,
        metadata={"version": version},
    )


def endpoint_sets(subsets: Sequence[str], max_size: int) -> st.SearchStrategy[tuple[Endpoint, ...]]:
    """Up to ``max_size`` endpoints on distinct addresses (of 6), each healthy or not, on one
    of two ports, its ``version`` one of ``subsets``; sorted as the sources hand them over."""
    return st.lists(
        st.builds(
            endpoint,
            st.integers(0, 5),
            st.booleans(),
            st.sampled_from(tuple(subsets)),
            st.sampled_from((8000, 8001)),
        ),
        max_size=max_size,
        unique_by=lambda e: e.address,
    ).map(lambda found: tuple(sorted(found, key=lambda e: (e.address, e.port))))


def apply_service_step(services: dict[str, Service], kind: str, value: Any) -> bool:
    """The inventory steps both memo property tests take: a service set, removed, or rebuilt
    equal but not the same object. False: ``kind`` is not one of them."""
    if kind == "service":
        name, found = value
        services[name] = Service(name, found)
    elif kind == "remove service":
        services.pop(value, None)
    elif kind == "same service rebuilt":
        if value in services:
            services[value] = dataclasses.replace(services[value])  # equal, not same
    else:
        return False
    return True
