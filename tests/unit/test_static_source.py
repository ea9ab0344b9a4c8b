"""The static registry: the contract's YAML format, errors with line numbers, hot reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from xds_server.model.inventory import Endpoint, Health, Inventory, Service
from xds_server.sources.base import InventorySource
from xds_server.sources.static import (
    STATIC_METADATA_NAMESPACE,
    RegistryError,
    StaticRegistry,
    load_registry,
    parse_registry,
)

DESIGN_EXAMPLE = """\
services:
  web:
    endpoints:
      - {address: 127.0.0.1, port: 8081}                  # weight 1, healthy, no zone
      - {address: 127.0.0.1, port: 8082, weight: 3, health: degraded, zone: dc1,
         metadata: {version: v2}}
"""


def _yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# --- parsing -------------------------------------------------------------------------------


def test_design_example_parses_to_the_documented_inventory() -> None:
    inventory = parse_registry(DESIGN_EXAMPLE)
    assert inventory.synced
    assert inventory == Inventory.of(
        {
            "web": Service(
                "web",
                (
                    Endpoint("127.0.0.1", 8081),
                    Endpoint(
                        "127.0.0.1",
                        8082,
                        weight=3,
                        health=Health.DEGRADED,
                        zone="dc1",
                        metadata={STATIC_METADATA_NAMESPACE: {"version": "v2"}},
                    ),
                ),
            )
        }
    )
    assert STATIC_METADATA_NAMESPACE == "xds_server"


def test_endpoints_are_sorted_so_order_in_the_file_does_not_matter() -> None:
    a = parse_registry(
        _yaml("""
        services:
          api:
            endpoints:
              - {address: 10.0.0.2, port: 80}
              - {address: 10.0.0.1, port: 81}
              - {address: 10.0.0.1, port: 80}
        """)
    )
    b = parse_registry(
        _yaml("""
        services:
          api:
            endpoints:
              - {address: 10.0.0.1, port: 80}
              - {address: 10.0.0.2, port: 80}
              - {address: 10.0.0.1, port: 81}
        """)
    )
    assert a == b
    assert [(e.address, e.port) for e in a.services["api"].endpoints] == [
        ("10.0.0.1", 80),
        ("10.0.0.1", 81),
        ("10.0.0.2", 80),
    ]


def test_every_health_value_and_empty_services() -> None:
    inventory = parse_registry(
        _yaml("""
        services:
          a:
            endpoints:
              - {address: 10.0.0.1, port: 1, health: healthy}
              - {address: 10.0.0.2, port: 1, health: degraded}
              - {address: 10.0.0.3, port: 1, health: unhealthy}
          empty: {}
          no-endpoints: {endpoints: []}
        """)
    )
    assert [e.health for e in inventory.services["a"].endpoints] == [
        Health.HEALTHY,
        Health.DEGRADED,
        Health.UNHEALTHY,
    ]
    assert inventory.services["empty"] == Service("empty", ())
    assert inventory.services["no-endpoints"] == Service("no-endpoints", ())
    assert parse_registry("services: {}\n") == Inventory.of({})


def test_nested_metadata_is_kept_as_json() -> None:
    inventory = parse_registry(
        _yaml("""
        services:
          a:
            endpoints:
              - address: 10.0.0.1
                port: 1
                metadata: {version: v2, canary: true, shard: 3, labels: {team: x}, list: [1, 2]}
        """)
    )
    (endpoint,) = inventory.services["a"].endpoints
    assert endpoint.metadata == {
        "xds_server": {
            "version": "v2",
            "canary": True,
            "shard": 3,
            "labels": {"team": "x"},
            "list": [1, 2],
        }
    }


def _error(text: str) -> RegistryError:
    with pytest.raises(RegistryError) as info:
        parse_registry(_yaml(text), "reg.yaml")
    return info.value


def test_yaml_syntax_error_names_the_line() -> None:
    err = _error("""
        services:
          web:
            endpoints:
              - {address: 127.0.0.1, port: 8081
              - {address: 127.0.0.1, port: 8082}
        """)
    assert err.line in (4, 5)  # the flow mapping opened on line 4 is unterminated
    assert "YAML syntax error" in str(err)
    assert str(err).startswith(f"reg.yaml: line {err.line}: ")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param(
            """
            services:
              web:
                endpoints:
                  - {address: 127.0.0.1, port: 8081}
                  - address: 127.0.0.1
                    port: 70000
            """,
            6,
            ["services.web.endpoints[1].port", "less than or equal to 65535"],
            id="port-out-of-range",
        ),
        pytest.param(
            """
            services:
              web:
                endpoints:
                  - address: 127.0.0.1
                    port: 8081
                    wieght: 3
            """,
            6,
            ["services.web.endpoints[0].wieght", "unknown field"],
            id="unknown-field",
        ),
        pytest.param(
            """
            services:
              web:
                endpoints:
                  - {address: 127.0.0.1, port: 8081}
              db:
                endpoints:
                  - {address: 127.0.0.1, port: 5432, health: sick}
            """,
            7,
            ["services.db.endpoints[0].health", "healthy"],
            id="bad-health",
        ),
        pytest.param(
            """
            services:
              web:
                endpoints:
                  - {address: 127.0.0.1, port: 8081}
                  - {port: 8082}
            """,
            5,
            ["services.web.endpoints[1].address", "required"],
            id="missing-address-names-the-endpoint-line",
        ),
        pytest.param(
            """
            services:
              web:
                endpoints:
                  - {address: 127.0.0.1, port: "8081"}
            """,
            4,
            ["services.web.endpoints[0].port", "integer"],
            id="port-as-string",
        ),
        pytest.param(
            """
            services:
              web:
                endpoints:
                  - {address: 127.0.0.1, port: 8081, weight: 0}
            """,
            4,
            ["weight", "greater than or equal to 1"],
            id="weight-zero",
        ),
        pytest.param(
            """
            services:
              web:
                endpoints:
                  - {address: 127.0.0.1, port: 8081, metadata: {since: 2024-01-01}}
            """,
            4,
            ["services.web.endpoints[0].metadata.since"],
            id="metadata-not-json",
        ),
        pytest.param(
            """
            service:
              web: {}
            """,
            1,
            ["service", "unknown field"],
            id="top-level-typo",
        ),
        pytest.param(
            """
            services:
              web:
                endpoints:
                  - {address: 127.0.0.1, port: 8081}
              web:
                endpoints: []
            """,
            5,
            ["duplicate key 'web'"],
            id="duplicate-service",
        ),
        pytest.param(
            """
            services:
              web:
                endpoints:
                  - {address: 127.0.0.1, port: 8081}
                  - {address: 127.0.0.1, port: 8081, weight: 2}
            """,
            5,
            ["duplicate endpoint 127.0.0.1:8081"],
            id="duplicate-endpoint",
        ),
    ],
)
def test_schema_errors_name_the_line_and_the_field(text: str, line: int, words: list[str]) -> None:
    err = _error(text)
    assert err.line == line, str(err)
    for word in words:
        assert word in str(err)
    assert "\n" not in str(err)


@pytest.mark.parametrize("text", ["", "# nothing\n", "services:\n", "- a\n- b\n", "just text\n"])
def test_empty_or_shapeless_file_is_an_error_not_an_empty_registry(text: str) -> None:
    with pytest.raises(RegistryError):
        parse_registry(text)


def test_load_registry_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        load_registry(tmp_path / "nope.yaml")


def test_load_registry_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(DESIGN_EXAMPLE)
    assert load_registry(path) == parse_registry(DESIGN_EXAMPLE)


# --- the running source --------------------------------------------------------------------

WAIT = 10.0  # generous: the machine is shared; a change normally arrives in ~0.1 s


class Running:
    def __init__(self, source: StaticRegistry) -> None:
        self.source = source
        self.published: asyncio.Queue[Inventory] = asyncio.Queue()

    async def next(self) -> Inventory:
        return await asyncio.wait_for(self.published.get(), WAIT)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Poll a condition that has no event to await (status fields) with a deadline."""
        deadline = time.monotonic() + WAIT
        while not condition():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(path: Path) -> AsyncIterator[Running]:
    source = StaticRegistry(path, rescan_interval=60)
    handle = Running(source)
    task = asyncio.create_task(source.run(handle.published.put_nowait))
    try:
        yield handle
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
    assert task.done()


def _write_atomically(path: Path, text: str) -> None:
    """What most editors do: write a temporary file and rename it over the original."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_static_registry_satisfies_the_protocol(tmp_path: Path) -> None:
    assert isinstance(StaticRegistry(tmp_path / "r.yaml"), InventorySource)


async def test_initial_load_then_reload_on_edit(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(DESIGN_EXAMPLE)
    async with running(path) as r:
        first = await r.next()
        assert first == parse_registry(DESIGN_EXAMPLE)
        assert r.source.status.ready
        assert r.source.status.last_error is None

        edited = DESIGN_EXAMPLE + "  api:\n    endpoints: [{address: 10.0.0.9, port: 9000}]\n"
        start = time.monotonic()
        path.write_text(edited)  # in place
        second = await r.next()
        print(f"in-place edit published after {time.monotonic() - start:.3f}s")
        assert second.services["api"].endpoints == (Endpoint("10.0.0.9", 9000),)

        _write_atomically(path, DESIGN_EXAMPLE)  # rename over: the file's inode changes
        third = await r.next()
        assert "api" not in third.services
        assert third == first


async def test_unchanged_content_is_not_republished(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(DESIGN_EXAMPLE)
    async with running(path) as r:
        await r.next()
        path.write_text("# only a comment changed\n" + DESIGN_EXAMPLE)
        path.write_text("services: {}\n")
        # Had the comment-only edit been published, it would come first.
        nxt = await r.next()
        assert nxt == Inventory.of({})
        assert r.published.empty()


async def test_broken_edit_keeps_the_last_good_registry_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xds_server.sources.static")
    path = tmp_path / "registry.yaml"
    path.write_text(DESIGN_EXAMPLE)
    async with running(path) as r:
        good = await r.next()
        path.write_text(DESIGN_EXAMPLE.replace("port: 8082", "port: -1"))
        await r.until(lambda: r.source.status.last_error is not None)
        error = r.source.status.last_error
        assert error is not None
        assert "line 5" in error and "port" in error
        assert r.source.status.ready  # ready never goes back once synced
        errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
        assert len(errors) == 1, [rec.getMessage() for rec in errors]
        assert "line 5" in errors[0].getMessage()
        assert "keeping the last good inventory" in errors[0].getMessage()
        assert r.published.empty()

        path.write_text("services:\n  web: {endpoints: [{address: 10.0.0.1, port: 1}]}\n")
        recovered = await r.next()
        assert recovered != good
        assert recovered.services["web"].endpoints == (Endpoint("10.0.0.1", 1),)
        assert r.source.status.last_error is None
        assert any("recovered" in rec.getMessage() for rec in caplog.records)


async def test_missing_file_at_start_is_an_error_until_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="xds_server.sources.static")
    path = tmp_path / "registry.yaml"
    async with running(path) as r:
        await r.until(lambda: r.source.status.last_error is not None)
        status = r.source.status
        assert not status.ready
        assert status.last_error is not None and "does not exist" in status.last_error
        assert [rec.getMessage() for rec in caplog.records if "does not exist" in rec.getMessage()]
        _write_atomically(path, DESIGN_EXAMPLE)
        assert await r.next() == parse_registry(DESIGN_EXAMPLE)
        assert r.source.status.ready


async def test_deleting_the_file_keeps_the_last_good_registry(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(DESIGN_EXAMPLE)
    async with running(path) as r:
        await r.next()
        path.unlink()
        await r.until(lambda: r.source.status.last_error is not None)
        assert r.published.empty()
        path.write_text("services: {}\n")
        assert await r.next() == Inventory.of({})


async def test_other_files_in_the_directory_do_not_publish(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(DESIGN_EXAMPLE)
    async with running(path) as r:
        await r.next()
        (tmp_path / "unrelated.txt").write_text("x")
        path.write_text("services: {}\n")
        assert await r.next() == Inventory.of({})
        assert r.published.empty()


async def test_cancellation_is_prompt(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(DESIGN_EXAMPLE)
    source = StaticRegistry(path)
    queue: asyncio.Queue[Inventory] = asyncio.Queue()
    task = asyncio.create_task(source.run(queue.put_nowait))
    await asyncio.wait_for(queue.get(), WAIT)
    start = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)
    assert time.monotonic() - start < 2.0


# --- mesh sidecars (sidecar_port) ------------------------------------------------------------

MESH_EXAMPLE = """\
services:
  api:
    endpoints:
      - {address: 10.0.0.1, port: 8080, sidecar_port: 21000}
      - {address: 10.0.0.2, port: 8080, health: unhealthy, zone: z2, sidecar_port: 21000,
         sidecar_address: 10.0.1.2}
      - {address: 10.0.0.3, port: 8080}
"""


def test_sidecar_port_is_a_mesh_endpoint_with_the_endpoint_s_health() -> None:
    api = parse_registry(MESH_EXAMPLE).services["api"]
    assert [(e.address, e.port) for e in api.endpoints] == [
        ("10.0.0.1", 8080),
        ("10.0.0.3", 8080),
        ("10.0.0.2", 8080),
    ]
    assert api.mesh_endpoints == (
        Endpoint("10.0.0.1", 21000),
        Endpoint("10.0.1.2", 21000, health=Health.UNHEALTHY, zone="z2"),
    )
    assert parse_registry(DESIGN_EXAMPLE).services["web"].mesh_endpoints == ()


@pytest.mark.parametrize(
    ("endpoint", "words"),
    [
        ("{address: 10.0.0.1, port: 80, sidecar_port: 0}", "sidecar_port"),
        ("{address: 10.0.0.1, port: 80, sidecar_port: '21000'}", "sidecar_port"),
        ("{address: 10.0.0.1, port: 80, sidecar_address: 10.0.0.9}", "needs sidecar_port"),
        ("{address: 10.0.0.1, port: 80, sidecar_port: 1, sidecar_address: ''}", "sidecar_address"),
    ],
)
def test_invalid_sidecar_fields_name_the_field_and_line(endpoint: str, words: str) -> None:
    err = _error(f"services:\n  api:\n    endpoints:\n      - {endpoint}\n")
    assert err.line == 4, str(err)
    assert words in str(err)


def test_two_endpoints_naming_one_sidecar_is_an_error() -> None:
    err = _error("""
        services:
          api:
            endpoints:
              - {address: 10.0.0.1, port: 8080, sidecar_port: 21000}
              - {address: 10.0.0.2, port: 8080, sidecar_port: 21000, sidecar_address: 10.0.0.1}
        """)
    assert err.line == 5
    assert "duplicate sidecar 10.0.0.1:21000" in str(err)


async def test_hot_reload_updates_mesh_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(MESH_EXAMPLE)
    async with running(path) as r:
        first = await r.next()
        assert len(first.services["api"].mesh_endpoints) == 2
        _write_atomically(
            path, MESH_EXAMPLE.replace("sidecar_port: 21000}", "sidecar_port: 21001}")
        )
        second = await r.next()
        assert [e.port for e in second.services["api"].mesh_endpoints] == [21001, 21000]
        _write_atomically(path, DESIGN_EXAMPLE)
        third = await r.next()
        assert "api" not in third.services
