"""The mesh's memos (per sidecar group in translation, per message in ``Snapshot.build``, per
group snapshot in the pipeline, per snapshot in the consistency check) change no byte: a
cold translation and build give the same resources, and what changes is rebuilt."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import pytest
from google.protobuf.message import Message

from tests.integration.config_strategies import mesh_identities
from tests.unit.test_translate_determinism import clear_caches as clear_edge_caches
from tests.unit.test_translate_determinism import serialised
from tests.unit.test_translate_mesh import (
    API_V2,
    CANARY,
    MESH_INVENTORY,
    intention,
    mesh_config,
)
from xds_server.cache import consistency, encoding
from xds_server.cache import snapshot as snapshot_module
from xds_server.cache.snapshot import Resource, SharedResources, Snapshot
from xds_server.cache.snapshot_cache import SnapshotCache
from xds_server.model import Config, Endpoint, Inventory, Service
from xds_server.model.workload import Identities
from xds_server.pipeline.snapshots import SnapshotPipeline
from xds_server.translate import Translation, translate
from xds_server.translate.mesh import sidecars

SERVICES = ("frontend", "api", "db", "api-v2")
PERMISSIVE = {"mtls": "permissive", "default_action": "allow"}


def config(*extra: tuple[str, str, dict[str, Any]], mesh: dict[str, Any] | None = None) -> Config:
    return mesh_config(
        API_V2,
        CANARY,
        intention("f-to-api", "frontend", "api", action="allow"),
        intention("api-to-db", "api", "db", action="allow"),
        *extra,
        mesh=mesh,
    )


def cold(inventory: Inventory, cfg: Config, identities: Identities) -> Translation:
    clear_edge_caches()
    sidecars.clear_caches()
    return translate(inventory, cfg, identities)


def renewed(identities: Identities, service: str) -> Identities:
    """``identities`` with ``service``'s re-issued (a new serial and certificate)."""
    by_service = dict(identities.by_service)
    old = by_service[service]
    by_service[service] = dataclasses.replace(
        old, serial="02", certificate_chain=old.certificate_chain + "\n"
    )
    return Identities(MappingProxyType(by_service), identities.trust_bundle)


@pytest.mark.parametrize("mesh", [None, PERMISSIVE])
def test_a_warm_translation_gives_the_bytes_of_a_cold_one(mesh: dict[str, Any] | None) -> None:
    identities = mesh_identities(SERVICES)
    warm_config = config(mesh=mesh)
    translate(MESH_INVENTORY, warm_config, identities)  # fill the memos
    # Equal inputs as new objects (a new revision of the same documents): still equal bytes.
    warm = serialised(translate(MESH_INVENTORY, config(mesh=mesh), identities))
    assert warm == serialised(cold(MESH_INVENTORY, config(mesh=mesh), identities))
    assert len(warm) > 20


def test_after_a_change_a_warm_translation_gives_the_bytes_of_a_cold_one() -> None:
    identities = mesh_identities(SERVICES)
    translate(MESH_INVENTORY, config(), identities)
    changes: list[tuple[Inventory, Config, Identities]] = [
        (MESH_INVENTORY, config(), renewed(identities, "api")),
        (
            MESH_INVENTORY.with_service(
                Service("api", mesh_endpoints=(Endpoint("10.0.0.9", 20001),))
            ),
            config(),
            identities,
        ),
        (MESH_INVENTORY, config(intention("f-to-db", "frontend", "db", action="deny")), identities),
        (MESH_INVENTORY, config(mesh=PERMISSIVE), identities),
        (MESH_INVENTORY, mesh_config(API_V2), identities),  # the route detached
        (
            MESH_INVENTORY,
            config(("ServicePolicy", "api", {"load_balancing": {"policy": "least_request"}})),
            identities,
        ),
    ]
    for inventory, cfg, ids in changes:
        translate(MESH_INVENTORY, config(), identities)
        warm = serialised(translate(inventory, cfg, ids))
        assert warm == serialised(cold(inventory, cfg, ids))
        translate(MESH_INVENTORY, config(), identities)  # warm the memos on the base again


def test_a_renewal_changes_only_its_own_groups_resources() -> None:
    identities = mesh_identities(SERVICES)
    cfg = config()
    before = translate(MESH_INVENTORY, cfg, identities)
    after = translate(MESH_INVENTORY, cfg, renewed(identities, "db"))
    assert after.groups["db"] is not before.groups["db"]
    assert after.groups["db"].listeners == before.groups["db"].listeners
    for group in ("frontend", "api-a", "api-b", "api-v2"):
        assert after.groups[group] is before.groups[group]


def test_an_upstreams_instances_change_their_callers_resources_only() -> None:
    identities = mesh_identities(SERVICES)
    cfg = config()
    before = translate(MESH_INVENTORY, cfg, identities)
    moved = MESH_INVENTORY.with_service(Service("db", mesh_endpoints=(Endpoint("10.0.3.1", 1),)))
    after = translate(moved, cfg, identities)
    for group in ("api-a", "api-b"):  # api calls db
        assert after.groups[group] is not before.groups[group]
    for group in ("frontend", "db", "api-v2"):
        assert after.groups[group] is before.groups[group]


def test_an_intention_changes_its_destinations_resources_only() -> None:
    identities = mesh_identities(SERVICES)
    before = translate(MESH_INVENTORY, config(), identities)
    after = translate(
        MESH_INVENTORY, config(intention("f-to-db", "frontend", "db", action="deny")), identities
    )
    assert after.groups["db"] is not before.groups["db"]
    for group in ("frontend", "api-a", "api-b", "api-v2"):
        assert after.groups[group] is before.groups[group]


def test_a_message_in_every_group_is_serialised_once_per_build() -> None:
    translation = translate(MESH_INVENTORY, config(), mesh_identities(SERVICES))
    shared = SharedResources()
    snapshots = [Snapshot.build(r.messages(), shared=shared) for r in translation.groups.values()]
    bundles = {id(s.of_type(_SECRET)["mesh/trust-bundle"]) for s in snapshots}
    assert len(snapshots) > 3 and len(bundles) == 1
    alone = [Snapshot.build(r.messages()) for r in translation.groups.values()]
    assert [s.resources for s in alone] == [s.resources for s in snapshots]  # the same bytes


_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def test_a_resource_equal_to_the_previous_one_keeps_its_object() -> None:
    identities = mesh_identities(SERVICES)
    first = Snapshot.build(translate(MESH_INVENTORY, config(), identities).groups["db"].messages())
    sidecars.clear_caches()  # equal messages, new objects
    again = translate(MESH_INVENTORY, config(), identities).groups["db"].messages()
    second = Snapshot.build(again, previous=first)
    assert second.unchanged
    for type_url, resources in second.resources.items():
        for name, resource in resources.items():
            assert resource is first.resources[type_url][name]


def _old_fields(name: str, message: Message) -> tuple[bytes, bytes]:
    """What ``Resource.of`` encoded before ``encoding.resource_fields``."""
    type_url = "type.googleapis.com/" + message.DESCRIPTOR.full_name
    body = message.SerializeToString(deterministic=True)
    any_bytes = encoding.any_message(type_url, body)
    version = snapshot_module.content_version(body)
    return (
        encoding.sotw_resource_field(any_bytes),
        encoding.delta_resource_field(name, version, any_bytes),
    )


def test_resource_fields_are_the_wire_encoding() -> None:
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

    for size in (0, 1, 100, 127, 128, 16_383, 16_384, 3_000_000):
        message = secret_pb2.Secret(name=f"s{size}")
        message.generic_secret.secret.inline_string = "x" * size
        resource = Resource.of(message.name, message)
        assert (resource.sotw_field, resource.delta_field) == _old_fields(message.name, message)
    for value in (0, 1, 127, 128, 255, 16_383, 16_384, 2**21, 2**35):
        assert encoding.varint(value) == _varint(value)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def _pipeline(identities: Identities) -> tuple[SnapshotPipeline, SnapshotCache]:
    cache = SnapshotCache()
    return SnapshotPipeline(
        cache, translate, MESH_INVENTORY, config(), identities=identities
    ), cache


def test_the_pipeline_reuses_the_snapshot_of_an_unchanged_group() -> None:
    identities = mesh_identities(SERVICES)
    pipeline, cache = _pipeline(identities)
    assert pipeline.build_now() is not None
    before = dict(cache.state.groups)
    pipeline.set_identities(renewed(identities, "db"))
    result = pipeline.build_now()
    assert result is not None and result.error is None
    after = cache.state.groups
    assert after["db"] is not before["db"]
    secret = after["db"].of_type(_SECRET)["mesh/identity/db"]
    assert secret.version != before["db"].of_type(_SECRET)["mesh/identity/db"].version
    for group in ("frontend", "api-a", "api-b", "api-v2"):
        assert after[group] is before[group]


def test_a_snapshot_found_consistent_once_is_not_parsed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshot = Snapshot.build(
        translate(MESH_INVENTORY, config(), mesh_identities(SERVICES)).groups["db"].messages()
    )
    consistency.check(snapshot)
    monkeypatch.setattr(consistency, "problems", lambda s: ["parsed again"])
    consistency.check(snapshot)  # remembered
    other = Snapshot.build([m for ms in snapshot.messages.values() for m in ms.values()])
    with pytest.raises(consistency.InconsistentSnapshot):
        consistency.check(other)
