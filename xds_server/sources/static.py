"""The static registry: services and endpoints from a YAML file, reloaded when it changes.

The file format is part of the contract (DESIGN.md)::

    services:
      web:
        endpoints:
          - {address: 127.0.0.1, port: 8081}
          - {address: 127.0.0.1, port: 8082, weight: 3, health: degraded, zone: dc1,
             metadata: {version: v2}}
          - {address: 10.0.0.7, port: 8080, sidecar_port: 21000}

An endpoint's ``sidecar_port`` (and ``sidecar_address``, default the endpoint's ``address``)
names its mesh sidecar: the service gets a mesh endpoint there, with the endpoint's health.

An endpoint's ``metadata`` becomes its Envoy filter metadata under the namespace
``xds_server`` (``STATIC_METADATA_NAMESPACE``), so ``{version: v2}`` is served as
``filter_metadata: {xds_server: {version: v2}}``; the Consul source uses ``consul``. Its
optional ``tags: [v2, canary]`` land there too, as key ``tags``; ``ServicePolicy`` subsets
select on both (see ``model.subsets``).

Errors name the line: YAML syntax errors carry PyYAML's mark, and schema errors are located by
walking the composed YAML node tree along pydantic's error location.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from watchfiles import awatch

from xds_server.model.inventory import Endpoint, Health, Inventory, Service
from xds_server.sources.base import Publish, SourceStatus, StatusTracker

log = logging.getLogger(__name__)

#: The filter-metadata namespace of an endpoint's ``metadata`` from the static registry.
STATIC_METADATA_NAMESPACE = "xds_server"

_Name = Annotated[StrictStr, Field(min_length=1)]


class _EndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: Annotated[StrictStr, Field(min_length=1)]
    port: Annotated[StrictInt, Field(ge=1, le=65535)]
    weight: Annotated[StrictInt, Field(ge=1)] = 1
    health: Health = Health.HEALTHY
    zone: StrictStr = ""
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    #: Labels a ``ServicePolicy`` subset can select on, as Consul tags are.
    tags: list[Annotated[StrictStr, Field(min_length=1)]] = Field(default_factory=list)
    #: The instance's mesh sidecar: its public (mutual TLS) port, and its address when it is
    #: not the instance's own. It becomes one of the service's ``mesh_endpoints``.
    sidecar_port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    sidecar_address: Annotated[StrictStr, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _address_needs_port(self) -> _EndpointSpec:
        if self.sidecar_address is not None and self.sidecar_port is None:
            raise ValueError("sidecar_address needs sidecar_port")
        if self.tags and "tags" in self.metadata:
            raise ValueError("tags are served as metadata key 'tags': set one of the two")
        return self


class _ServiceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoints: list[_EndpointSpec] = Field(default_factory=list)


class _RegistrySpec(BaseModel):
    """``services`` is required so an empty or truncated file is an error, not "no services"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    services: dict[_Name, _ServiceSpec]


class RegistryError(Exception):
    """An unreadable or invalid registry file; ``str()`` is one line naming file and line."""

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        where = f"{path}: line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.reason = reason
        self.line = line


#: libyaml's safe loader when PyYAML has it: a 10,000-endpoint registry parsed in pure
#: Python was a third of the server's CPU when every endpoint changed at once.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (its marks give line numbers) and the data built from it, parsed once
    (2.7 s -> 0.5 s for 1,000 services x 10 endpoints)."""
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


def load_registry(path: str | os.PathLike[str]) -> Inventory:
    """Read and validate a registry file; raise ``RegistryError`` naming the offending line."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise RegistryError(file, "registry file does not exist") from None
    except OSError as exc:
        raise RegistryError(file, f"cannot read registry file: {exc.strerror or exc}") from None
    return parse_registry(data, file)


def parse_registry(data: bytes | str, path: str | os.PathLike[str] = "<registry>") -> Inventory:
    """Validate registry YAML text (``path`` only names it in errors)."""
    file = Path(path)
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise RegistryError(file, f"not UTF-8 text (byte {exc.start})") from None
    try:
        root, raw = _load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise RegistryError(file, f"YAML syntax error: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise RegistryError(file, f"YAML error: {exc}") from None
    if root is not None:
        _reject_duplicate_keys(root, file)
    if not isinstance(raw, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        raise RegistryError(file, "expected a mapping with a `services:` key", line)
    try:
        spec = _RegistrySpec.model_validate(raw)
    except ValidationError as exc:
        raise _schema_error(exc, root, file) from None
    return Inventory.of({name: _service(name, s, root, file) for name, s in spec.services.items()})


def _service(name: str, spec: _ServiceSpec, root: yaml.Node | None, file: Path) -> Service:
    seen: set[tuple[str, int]] = set()
    endpoints = []
    for i, ep in enumerate(spec.endpoints):
        key = (_normalise_address(ep.address), ep.port)
        if key in seen:
            line = _line_of(root, ("services", name, "endpoints", i))
            raise RegistryError(
                file, f"services.{name}.endpoints[{i}]: duplicate endpoint {key[0]}:{key[1]}", line
            )
        seen.add(key)
        labels: dict[str, JsonValue] = dict(ep.metadata)
        if ep.tags:
            labels["tags"] = list(ep.tags)
        metadata = {STATIC_METADATA_NAMESPACE: labels} if labels else {}
        endpoints.append(
            Endpoint(
                address=ep.address,
                port=ep.port,
                weight=ep.weight,
                health=ep.health,
                zone=ep.zone,
                metadata=metadata,
            )
        )
    return Service(name, _sorted(endpoints), _mesh_endpoints(name, spec, root, file))


def _mesh_endpoints(
    name: str, spec: _ServiceSpec, root: yaml.Node | None, file: Path
) -> tuple[Endpoint, ...]:
    """Each endpoint's sidecar (``sidecar_port``) with the endpoint's health, weight and zone."""
    seen: set[tuple[str, int]] = set()
    mesh = []
    for i, ep in enumerate(spec.endpoints):
        if ep.sidecar_port is None:
            continue
        address = ep.sidecar_address or ep.address
        key = (_normalise_address(address), ep.sidecar_port)
        if key in seen:
            line = _line_of(root, ("services", name, "endpoints", i, "sidecar_port"))
            raise RegistryError(
                file,
                f"services.{name}.endpoints[{i}].sidecar_port: duplicate sidecar {key[0]}:{key[1]}",
                line,
            )
        seen.add(key)
        mesh.append(
            Endpoint(
                address=address,
                port=ep.sidecar_port,
                weight=ep.weight,
                health=ep.health,
                zone=ep.zone,
            )
        )
    return _sorted(mesh)


def _sorted(endpoints: list[Endpoint]) -> tuple[Endpoint, ...]:
    return tuple(sorted(endpoints, key=lambda e: (e.priority, e.zone, e.address, e.port)))


def _normalise_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower()


def _schema_error(exc: ValidationError, root: yaml.Node | None, file: Path) -> RegistryError:
    # A "missing" error is often the consequence of a typo reported as an unknown field.
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] == "missing")
    first = errors[0]
    loc = tuple(first["loc"])
    dotted = _dotted(loc)
    reason = f"{dotted}: {first['msg']}" if dotted else str(first["msg"])
    if first["type"] == "extra_forbidden":
        reason = f"{dotted}: unknown field"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return RegistryError(file, reason, _line_of(root, loc))


def _dotted(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_of(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the node at ``loc``: its key's line for a mapping entry; the deepest
    existing ancestor's line when the location is missing (a required field)."""
    if root is None:
        return None
    node: yaml.Node = root
    line = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _reject_duplicate_keys(node: yaml.Node, file: Path) -> None:
    """YAML silently keeps the last of two equal keys; a duplicated service is a typo."""
    for child in _walk(node):
        if isinstance(child, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in child.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen:
                        raise RegistryError(
                            file, f"duplicate key {key_node.value!r}", key_node.start_mark.line + 1
                        )
                    seen.add(key_node.value)


def _walk(node: yaml.Node) -> Iterator[yaml.Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                stack.extend((key_node, value_node))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


class StaticRegistry:
    """``InventorySource`` over a registry file, reloaded when it changes.

    The *directory* is watched, not the file, so editors that write a new file and rename it
    over the old one, and Kubernetes ConfigMap symlink swaps, are seen; every event in the
    directory re-reads the file and compares its bytes, so unrelated files cost one read.
    A rescan every ``rescan_interval`` seconds is the safety net for file systems without
    change notification. An invalid or missing file keeps the last good registry.
    """

    def __init__(self, path: str | os.PathLike[str], *, rescan_interval: float = 5.0) -> None:
        self._path = Path(path).absolute()
        self._rescan_ms = max(int(rescan_interval * 1000), 50)
        self._status = StatusTracker(log, "static registry")
        self._last_bytes: bytes | None = None
        self._last: Inventory | None = None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def status(self) -> SourceStatus:
        return self._status.status

    async def run(self, publish: Publish) -> None:
        directory = self._path.parent
        retry = 0.5
        while True:
            if not directory.is_dir():
                self._status.fail("file", "no-dir", f"directory {directory} does not exist")
                await asyncio.sleep(retry)
                retry = min(retry * 2, 10.0)
                continue
            retry = 0.5
            try:
                async with self._watch(directory) as changes:
                    await self._reload(publish)
                    async for _ in changes:
                        await self._reload(publish)
            except OSError as exc:  # the directory went away
                self._status.fail("file", "watch", f"cannot watch {directory}: {exc}")
                await asyncio.sleep(retry)

    @contextlib.asynccontextmanager
    async def _watch(self, directory: Path) -> AsyncIterator[AsyncIterator[object]]:
        """Start watching before the first read, so an edit right after it is not missed.

        ``awatch`` creates its notifier when first iterated; running that first step as a task
        and yielding to the loop once starts it before the caller reads the file.
        """
        gen = awatch(
            directory,
            watch_filter=None,
            recursive=False,
            yield_on_timeout=True,
            rust_timeout=self._rescan_ms,
        )
        first = asyncio.ensure_future(anext(gen))
        await asyncio.sleep(0)

        async def changes() -> AsyncIterator[object]:
            yield await first
            async for batch in gen:
                yield batch

        try:
            yield changes()
        finally:
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await first
            await gen.aclose()

    async def _reload(self, publish: Publish) -> None:
        try:
            data = await asyncio.to_thread(self._path.read_bytes)
        except FileNotFoundError:
            self._status.fail(
                "file", "missing", f"{self._path}: registry file does not exist (waiting for it)"
            )
            self._last_bytes = None
            return
        except OSError as exc:
            self._status.fail("file", "unreadable", f"{self._path}: cannot read: {exc}")
            self._last_bytes = None
            return
        if data == self._last_bytes:
            return
        self._last_bytes = data
        try:
            inventory = await asyncio.to_thread(parse_registry, data, self._path)
        except RegistryError as exc:
            # The kind is the message itself: every new mistake is logged once, with its line.
            self._status.fail("file", str(exc), str(exc))
            return
        self._status.ok("file")
        if inventory != self._last:
            self._last = inventory
            log.info(
                "static registry %s: loaded %d services, %d endpoints",
                self._path,
                len(inventory.services),
                sum(len(s.endpoints) for s in inventory.services.values()),
            )
            publish(inventory)
        self._status.mark_ready()
