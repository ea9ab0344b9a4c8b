"""Property: whatever config the model accepts, translated, is accepted by a real Envoy.

Each generated config is translated; the resources of every proxy group go into one static
bootstrap (listener ports are distinct, so the union is valid), and ``envoy --mode validate``
must exit 0.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.config_strategies import (
    documents,
    inventories,
    listener_ports,
    mesh_documents,
    mesh_identities,
    mesh_inventories,
)
from tests.integration.envoy_static import envoy_binary, envoy_validate, static_bootstrap
from xds_server.model import Config, Inventory, validate_config
from xds_server.model.inventory import Endpoint, Health, Service
from xds_server.model.workload import Identities
from xds_server.translate import Translation, translate

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(envoy_binary() is None, reason="envoy binary not installed"),
]

EXAMPLES = Path(__file__).resolve().parents[2] / "api" / "examples"


def config_of(raws: list[dict[str, Any]]) -> Config:
    return Config.from_documents(
        (raw["kind"], raw["name"], raw["spec"], revision) for revision, raw in enumerate(raws, 1)
    )


def assert_envoy_accepts(translation: Translation, context: str) -> None:
    bundles = [translation.default, *translation.groups.values()]
    with tempfile.TemporaryDirectory() as directory:
        result = envoy_validate(static_bootstrap(bundles), Path(directory))
    assert result.returncode == 0, f"{context}\n{result.stdout}\n{result.stderr}"


def with_test_files(raws: list[dict[str, Any]], directory: Path) -> list[dict[str, Any]]:
    """The examples' certificate paths (``/etc/envoy/tls/...``) replaced by files of test
    certificates made here, so Envoy can load them."""
    from tests.support.pki import TestCa

    ca = TestCa()
    (directory / "ca.pem").write_text(ca.pem)
    chain, key = ca.issue("shop.example.com").write(directory, "pair")
    files = {
        "certificate_file": chain,
        "private_key_file": key,
        "ca_bundle_file": directory / "ca.pem",
    }
    return [
        {**raw, "spec": {k: str(files[k]) if k in files else v for k, v in raw["spec"].items()}}
        if raw["kind"] == "Certificate"
        else raw
        for raw in raws
    ]


@pytest.mark.parametrize(
    "files",
    [
        ("listener.yaml", "route.yaml", "retry-policy.yaml", "service-policy.yaml"),
        ("demo.yaml",),
        ("listener.yaml", "subsets.yaml"),
        ("https.yaml", "tls-policy.yaml"),
        (
            "listener.yaml",
            "ca-bundle.yaml",
            "auth-policy.yaml",
            "rate-limit-policy.yaml",
            "telemetry.yaml",
            "edge-route.yaml",
        ),
        ("tcp-route.yaml", "tls-route.yaml"),
    ],
)
def test_examples_are_accepted_by_envoy(files: tuple[str, ...], tmp_path: Path) -> None:
    paths = [EXAMPLES / file for file in files]
    missing = [path.name for path in paths if not path.exists()]
    assert not missing, f"examples missing: {missing}"
    raws = [raw for path in paths for raw in yaml.safe_load_all(path.read_text())]
    assert raws
    config = config_of(with_test_files(raws, tmp_path))
    inventory = Inventory.of(
        {"api": Service("api", (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80, priority=1)))}
    )
    assert validate_config(config, inventory).ok
    assert_envoy_accepts(translate(inventory, config), "api/examples")


@settings(
    # 40 per CI run; XDS_TEST_ENVOY_EXAMPLES=600 for a bug hunt (each example is one
    # envoy --mode validate, ~0.2 s).
    max_examples=int(os.environ.get("XDS_TEST_ENVOY_EXAMPLES", "40")),
    deadline=None,
    # No "explain" phase: its tracer is very slow on Python < 3.12.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raws=documents(), inventory=inventories())
def test_every_valid_config_is_accepted_by_envoy(
    raws: list[dict[str, Any]], inventory: Inventory
) -> None:
    config = config_of(raws)  # raises if the strategy drew an invalid document: a test bug
    report = validate_config(config, inventory)
    assert report.ok, report.errors
    assert_envoy_accepts(translate(inventory, config), yaml.safe_dump(raws))


@st.composite
def meshes(draw: st.DrawFn) -> tuple[list[dict[str, Any]], Identities]:
    """An edge config with a mesh beside it, and identities for some of its sidecars."""
    raws = draw(documents())
    mesh = draw(mesh_documents(listener_ports(raws)))
    sidecars = [raw["name"] for raw in mesh if raw["kind"] == "Sidecar"]
    issued = draw(st.lists(st.sampled_from(sidecars), unique=True, min_size=1))
    trust_domain = mesh[0]["spec"].get("trust_domain", "mesh.local")
    return [*raws, *mesh], mesh_identities(issued, trust_domain)


@settings(
    max_examples=int(os.environ.get("XDS_TEST_ENVOY_EXAMPLES", "25")),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(drawn=meshes(), inventory=mesh_inventories())
def test_every_valid_mesh_is_accepted_by_envoy(
    drawn: tuple[list[dict[str, Any]], Identities], inventory: Inventory
) -> None:
    raws, identities = drawn
    config = config_of(raws)
    report = validate_config(config, inventory)
    assert report.ok, report.errors
    translation = translate(inventory, config, identities)
    for service in identities.by_service:
        assert any(  # the property is about mesh resources: make sure there are some
            f"mesh/identity/{service}" in {s.name for s in group.secrets}  # type: ignore[attr-defined]
            for group in translation.groups.values()
        )
    assert_envoy_accepts(translation, yaml.safe_dump(raws))


def test_a_hand_built_mesh_is_accepted_by_envoy() -> None:
    """Every mesh feature at once: http, grpc and tcp sidecars, permissive mTLS, L7
    permissions, a service policy on an upstream."""
    raws: list[dict[str, Any]] = [
        {"kind": "Mesh", "name": "mesh", "spec": {"mtls": "permissive"}},
        {
            "kind": "Sidecar",
            "name": "frontend",
            "spec": {
                "inbound": {"port": 21000, "local_port": 8080},
                "upstreams": [
                    {"service": "api", "local_port": 9191},
                    {"service": "db", "local_port": 5432, "protocol": "tcp"},
                ],
            },
        },
        {
            "kind": "Sidecar",
            "name": "api",
            "spec": {
                "groups": ["api-a", "api-b"],
                "inbound": {"port": 21001, "local_port": 8081, "protocol": "grpc"},
            },
        },
        {
            "kind": "Sidecar",
            "name": "db",
            "spec": {"inbound": {"port": 21002, "local_port": 5433, "protocol": "tcp"}},
        },
        {
            "kind": "ServicePolicy",
            "name": "api",
            "spec": {
                "load_balancing": {"policy": "ring_hash", "hash_policies": [{"header": "x-user"}]},
                "circuit_breakers": {"max_requests": 100},
                "outlier_detection": {"consecutive_5xx": 3},
            },
        },
        {
            "kind": "Intention",
            "name": "fe-api",
            "spec": {
                "source": "frontend",
                "destination": "api",
                "permissions": [
                    {"action": "deny", "http": {"path_prefix": "/admin"}},
                    {
                        "action": "allow",
                        "http": {
                            "path_exact": "/public",
                            "methods": ["GET", "HEAD"],
                            "headers": [{"name": "x-tenant", "exact": "a"}],
                        },
                    },
                ],
            },
        },
        {
            "kind": "Intention",
            "name": "all-api",
            "spec": {"source": "*", "destination": "api", "action": "allow"},
        },
        {
            "kind": "Intention",
            "name": "fe-db",
            "spec": {"source": "frontend", "destination": "db", "action": "allow"},
        },
    ]
    inventory = Inventory.of(
        {
            "api": Service(
                "api",
                (Endpoint("10.0.0.1", 8081),),
                mesh_endpoints=(
                    Endpoint("10.0.0.1", 21001),
                    Endpoint("10.0.0.2", 21001, health=Health.UNHEALTHY),
                ),
            ),
            "db": Service("db", mesh_endpoints=(Endpoint("10.0.0.3", 21002),)),
        }
    )
    config = config_of(raws)
    translation = translate(inventory, config, mesh_identities(("frontend", "api", "db")))
    assert sorted(translation.groups) == ["api-a", "api-b", "db", "frontend"]
    assert_envoy_accepts(translation, "hand-built mesh")
