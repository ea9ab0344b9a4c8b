"""The mesh checks of ``validate_config``: port collisions within a proxy group, one intention
per pair, L7 permissions need http, a provided CA the server can issue from, and warnings."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.pki import TestCa, utc_now
from tests.unit.model_builders import doc, listener
from xds_server.mesh.ca import key_usage
from xds_server.model import Config, Endpoint, Inventory, Service, validate_config
from xds_server.model.mesh_checks import NO_MESH
from xds_server.model.validation import ValidationReport

MESH = doc("Mesh", "mesh")


def check(*documents: dict[str, Any], now: datetime.datetime | None = None) -> ValidationReport:
    """The report of documents created in this order (one revision each)."""
    config = Config.from_documents(
        (d["kind"], d["name"], d["spec"], revision) for revision, d in enumerate(documents, start=1)
    )
    registry = Inventory.of(
        {
            "api": Service("api", (Endpoint("10.0.0.1", 8080),), (Endpoint("10.0.0.1", 20000),)),
            "frontend": Service("frontend", (Endpoint("10.0.0.2", 8080),)),
        }
    )
    return validate_config(config, registry, now=now)


def sidecar(
    name: str, port: int = 20000, *upstreams: tuple[str, int], **spec: Any
) -> dict[str, Any]:
    inbound = {"port": port, "local_port": 8080, **spec.pop("inbound", {})}
    listed = [{"service": s, "local_port": p} for s, p in upstreams]
    return doc("Sidecar", name, inbound=inbound, upstreams=listed, **spec)


def errors_at(report: ValidationReport, kind: str, name: str, field: str) -> list[str]:
    return [p.reason for p in report.errors if (p.kind, p.name, p.field) == (kind, name, field)]


def test_an_upstream_port_colliding_with_a_listener_of_the_group_is_an_error() -> None:
    everywhere = check(MESH, listener("edge", 9001), sidecar("frontend", 20000, ("api", 9001)))
    reasons = errors_at(everywhere, "Sidecar", "frontend", "spec.upstreams[0].local_port")
    assert reasons and "listener 'edge'" in reasons[0] and "9001" in reasons[0]
    # The listener's side names the sidecar, so whichever document is written, its own
    # field is in the answer.
    assert "sidecar 'frontend'" in errors_at(everywhere, "Listener", "edge", "spec.port")[0]
    mine = check(
        MESH, listener("edge", 9001, groups=["frontend"]), sidecar("frontend", 20000, ("api", 9001))
    )
    assert errors_at(mine, "Sidecar", "frontend", "spec.upstreams[0].local_port")


@pytest.mark.parametrize(
    ("listener_spec", "collides"),
    [
        ({"groups": ["edge"]}, False),  # another group's Envoys
        ({"address": "127.0.0.2"}, False),  # another address: the upstream binds 127.0.0.1
        ({"address": "::"}, False),  # another IP version
        ({"address": "127.0.0.1"}, True),
        ({"address": "0.0.0.0"}, True),
    ],
)
def test_only_the_same_socket_in_the_same_group_collides(
    listener_spec: dict[str, Any], collides: bool
) -> None:
    report = check(
        MESH, listener("edge", 9001, **listener_spec), sidecar("frontend", 20000, ("api", 9001))
    )
    assert bool(report.errors) is collides, report.errors


def test_the_inbound_port_is_bound_on_every_ipv4_address() -> None:
    report = check(MESH, listener("edge", 20000, address="127.0.0.1"), sidecar("api"))
    reason = errors_at(report, "Sidecar", "api", "spec.inbound.port")[0]
    assert "listener 'edge'" in reason and "127.0.0.1" in reason
    assert not check(MESH, listener("edge", 20000, address="::"), sidecar("api")).errors


def test_sidecars_sharing_a_group_share_its_ports() -> None:
    report = check(
        MESH,
        sidecar("api", 20000, groups=["shared"]),
        sidecar("frontend", 20001, ("api", 20000), groups=["shared"]),
    )
    reasons = errors_at(report, "Sidecar", "frontend", "spec.upstreams[0].local_port")
    assert "sidecar 'api' (spec.inbound.port)" in reasons[0]
    apart = check(MESH, sidecar("api", 20000), sidecar("frontend", 20001, ("api", 20000)))
    assert not apart.errors  # different groups: different Envoys


def test_a_sidecars_own_ports_and_its_applications_port_must_differ() -> None:
    own = check(MESH, sidecar("frontend", 20000, ("api", 20000)))
    assert errors_at(own, "Sidecar", "frontend", "spec.upstreams[0].local_port")
    app = check(MESH, sidecar("frontend", 20000, ("api", 8080)))
    assert (
        "spec.inbound.local_port"
        in errors_at(app, "Sidecar", "frontend", "spec.upstreams[0].local_port")[0]
    )
    remote_app = check(
        MESH, sidecar("frontend", 20000, ("api", 8080), inbound={"local_address": "10.1.1.1"})
    )
    assert not remote_app.errors  # the application is elsewhere: its port is not taken here


def test_two_intentions_for_one_pair() -> None:
    first = doc("Intention", "a", source="frontend", destination="api", action="allow")
    second = doc("Intention", "b", source="frontend", destination="api", action="deny")
    wildcard = doc("Intention", "c", source="*", destination="api", action="deny")
    report = check(MESH, sidecar("api"), first, second, wildcard)
    assert len(report.errors) == 1
    assert "intention 'a'" in errors_at(report, "Intention", "b", "spec.source")[0]


def test_l7_permissions_need_an_http_destination() -> None:
    l7 = doc(
        "Intention",
        "l7",
        source="frontend",
        destination="api",
        permissions=[{"action": "allow", "http": {"path_prefix": "/public"}}],
    )
    tcp = check(MESH, sidecar("api", inbound={"protocol": "tcp"}), l7)
    assert "tcp" in errors_at(tcp, "Intention", "l7", "spec.permissions")[0]
    for protocol in ("http", "http2", "grpc"):
        assert not check(MESH, sidecar("api", inbound={"protocol": protocol}), l7).errors
    plain = doc("Intention", "plain", source="frontend", destination="api", action="allow")
    assert not check(MESH, sidecar("api", inbound={"protocol": "tcp"}), plain).errors


def test_warnings_without_a_mesh_and_for_unknown_services() -> None:
    alone = check(
        sidecar("nowhere", 20000, ("ghost", 9001), ("frontend", 9002)),
        doc("Intention", "i", source="frontend", destination="api", action="allow"),
    )
    assert not alone.errors
    by_field = {(p.kind, p.name, p.field): p.reason for p in alone.warnings}
    assert by_field[("Sidecar", "nowhere", "kind")] == NO_MESH
    assert by_field[("Intention", "i", "kind")] == NO_MESH
    assert "not in the registry" in by_field[("Sidecar", "nowhere", "name")]
    assert "not in the registry" in by_field[("Sidecar", "nowhere", "spec.upstreams[0].service")]
    assert "no sidecars" in by_field[("Sidecar", "nowhere", "spec.upstreams[1].service")]
    assert "no Sidecar" in by_field[("Intention", "i", "spec.destination")]
    meshed = check(MESH, sidecar("api"), sidecar("frontend", 20000, ("api", 9001)))
    assert not meshed.errors and not meshed.warnings


def _ca_pem(ca: TestCa) -> tuple[str, str]:
    return ca.pem, ca.ca.private_key_pem.bytes().decode()


def _provided(name: str = "root") -> dict[str, Any]:
    return doc("Mesh", "mesh", ca={"provider": "provided", "certificate": name})


def _key_pair_doc(name: str, chain: str, key: str) -> dict[str, Any]:
    return doc("Certificate", name, certificate=chain, private_key=key)


def test_a_provided_ca_must_be_a_ca_key_pair() -> None:
    ca = TestCa()
    good = check(_key_pair_doc("root", *_ca_pem(ca)), _provided())
    assert not good.errors
    missing = check(_provided())
    assert "no certificate 'root'" in errors_at(missing, "Mesh", "mesh", "spec.ca.certificate")[0]
    bundle = check(ca.bundle_document("root"), _provided())
    assert "CA bundle" in errors_at(bundle, "Mesh", "mesh", "spec.ca.certificate")[0]
    leaf = ca.issue("api.example.com")
    not_ca = check(_key_pair_doc("root", leaf.chain, leaf.key), _provided())
    assert "CA:true" in errors_at(not_ca, "Mesh", "mesh", "spec.ca.certificate")[0]


def _self_signed(key_usage: x509.KeyUsage, days: int = 365) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "no-sign")])
    now = utc_now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key_pem


def test_a_provided_ca_must_be_allowed_to_sign_certificates() -> None:
    no_sign = _self_signed(key_usage("digital_signature"))
    report = check(_key_pair_doc("root", *no_sign), _provided())
    assert "keyCertSign" in errors_at(report, "Mesh", "mesh", "spec.ca.certificate")[0]
    signs = _self_signed(key_usage("key_cert_sign", "crl_sign"))
    assert not check(_key_pair_doc("root", *signs), _provided()).errors


def test_a_provided_ca_in_files_is_refused() -> None:
    """The server signs with the CA's key: it must hold it (it reads no key files)."""
    in_files = doc("Certificate", "root", certificate_file="/ca.pem", private_key_file="/ca.key")
    report = check(in_files, _provided())
    assert "inline" in errors_at(report, "Mesh", "mesh", "spec.ca.certificate")[0]


def test_an_expired_provided_ca_is_refused_even_when_the_certificate_allows_it() -> None:
    chain, key = _self_signed(key_usage("key_cert_sign", "crl_sign"), days=-1)
    allowed = doc("Certificate", "root", certificate=chain, private_key=key, allow_expired=True)
    report = check(allowed, _provided(), now=utc_now())
    assert "expired" in errors_at(report, "Mesh", "mesh", "spec.ca.certificate")[0]
    assert not [p for p in report.errors if p.kind == "Certificate"]
