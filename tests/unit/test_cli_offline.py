"""The commands that need no server: ``bootstrap`` and ``validate``; and how kinds and
problems are read and shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from xds_server.cli import main
from xds_server.cli.client import problem_lines
from xds_server.cli.files import directory_documents
from xds_server.cli.main import resolve_kind

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def printed_bootstrap(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, "bootstrap", *argv)
    assert code == 0, err
    document: dict[str, Any] = yaml.safe_load(out)
    return document


@pytest.mark.parametrize(
    ("file", "argv"),
    [
        ("bootstrap.yaml", []),
        ("bootstrap-delta.yaml", ["--delta"]),
        ("bootstrap-compose.yaml", ["--ads", "xds-server:18000", "--admin", "0.0.0.0:9901"]),
    ],
)
def test_bootstrap_prints_the_checked_in_bootstraps(
    capsys: pytest.CaptureFixture[str], file: str, argv: list[str]
) -> None:
    expected = yaml.safe_load((ROOT / "envoy" / file).read_text())
    printed = printed_bootstrap(capsys, "--node-id", "envoy-1", "--group", "default", *argv)
    assert printed == expected


def test_bootstrap_with_tls_to_the_control_plane(capsys: pytest.CaptureFixture[str]) -> None:
    printed = printed_bootstrap(
        capsys,
        "--node-id",
        "edge-1",
        "--group",
        "edge",
        "--ads",
        "xds.example.com:18000",
        "--ca",
        "/etc/xds/ca.pem",
        "--cert",
        "/etc/xds/envoy.pem",
        "--key",
        "/etc/xds/envoy-key.pem",
    )
    assert printed["node"] == {"id": "edge-1", "cluster": "edge"}
    (cluster,) = printed["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS"
    context = cluster["transport_socket"]["typed_config"]
    assert context["sni"] == "xds.example.com"
    common = context["common_tls_context"]
    assert common["validation_context"] == {
        "trusted_ca": {"filename": "/etc/xds/ca.pem"},
        "match_typed_subject_alt_names": [
            {"san_type": "DNS", "matcher": {"exact": "xds.example.com"}}
        ],
    }
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": "/etc/xds/envoy.pem"},
            "private_key": {"filename": "/etc/xds/envoy-key.pem"},
        }
    ]
    as_json = json.loads(
        run(capsys, "bootstrap", "--node-id", "a", "--group", "b", "--tls", "-o", "json")[1]
    )
    tls = as_json["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert "sni" not in tls  # an IP address: nothing to name
    assert "tls_certificates" not in tls["common_tls_context"]
    assert tls["common_tls_context"]["validation_context"] == {
        "trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}
    }


def test_bootstrap_prints_the_mtls_bootstrap(capsys: pytest.CaptureFixture[str]) -> None:
    expected = yaml.safe_load((ROOT / "envoy" / "bootstrap-mtls.yaml").read_text())
    printed = printed_bootstrap(
        capsys,
        "--node-id",
        "envoy-1",
        "--group",
        "default",
        "--ca",
        "/etc/envoy/tls/xds-ca.crt",
        "--cert",
        "/etc/envoy/tls/envoy.crt",
        "--key",
        "/etc/envoy/tls/envoy.key",
        "--sni",
        "xds-server.example.internal",
    )
    assert printed == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ads", "nonsense"], "--ads: expected HOST:PORT"),
        (["--ads", "127.0.0.1:0"], "--ads: expected HOST:PORT"),
        (["--cert", "c.pem"], "--cert and --key"),
    ],
)
def test_bootstrap_refuses_unusable_options(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "bootstrap", "--node-id", "a", "--group", "b", *argv)
    assert code == 2 and out == ""
    assert message in err


def test_bootstrap_requires_the_node_and_group(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "bootstrap", "--group", "edge")
    assert code == 2 and "--node-id" in err


def test_a_sidecar_bootstrap_is_the_bootstrap_of_its_service_group(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printed = printed_bootstrap(capsys, "--sidecar", "api", "--node-id", "api-1")
    # Only the node and the admin port (Consul's sidecar default) differ from an edge's.
    edge = printed_bootstrap(
        capsys, "--node-id", "api-1", "--group", "api", "--admin", "127.0.0.1:19000"
    )
    assert printed == edge
    assert printed["node"] == {"id": "api-1", "cluster": "api"}
    assert printed["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 19000,
    }


def test_a_sidecar_bootstrap_names_the_node_after_the_service_and_host(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "node-7")
    printed = printed_bootstrap(capsys, "--sidecar", "billing.v2", "--admin-port", "0")
    assert printed["node"] == {"id": "billing.v2-sidecar-node-7", "cluster": "billing.v2"}
    assert printed["admin"]["address"]["socket_address"]["port_value"] == 0
    grouped = printed_bootstrap(capsys, "--sidecar", "billing", "--group", "billing-canary")
    assert grouped["node"] == {"id": "billing-sidecar-node-7", "cluster": "billing-canary"}


def test_a_sidecar_bootstrap_takes_the_edge_options(capsys: pytest.CaptureFixture[str]) -> None:
    printed = printed_bootstrap(
        capsys,
        "--sidecar",
        "api",
        "--ads",
        "xds.example.com:18000",
        "--delta",
        "--ca",
        "/etc/xds/ca.pem",
        "--cert",
        "/etc/xds/api.pem",
        "--key",
        "/etc/xds/api-key.pem",
        "--admin",
        "127.0.0.1:19001",
        "-o",
        "yaml",
    )
    assert printed["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    (cluster,) = printed["static_resources"]["clusters"]
    assert cluster["transport_socket"]["typed_config"]["sni"] == "xds.example.com"
    common = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert common["tls_certificates"][0]["private_key"] == {"filename": "/etc/xds/api-key.pem"}
    assert printed["admin"]["address"]["socket_address"]["port_value"] == 19001


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sidecar", "-api"], "--sidecar: '-api' is not a service name"),
        (["--sidecar", "a b"], "--sidecar: 'a b' is not a service name"),
        (["--sidecar", "api", "--group", "x/y"], "--group: 'x/y' is not a proxy group name"),
        (["--sidecar", "api", "--admin", "nonsense"], "--admin: expected HOST:PORT"),
        (["--group", "edge"], "--node-id: required (or --sidecar SERVICE)"),
        (["--node-id", "edge-1"], "--group: required (or --sidecar SERVICE)"),
    ],
)
def test_a_sidecar_bootstrap_refuses_unusable_options(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "bootstrap", *argv)
    assert code == 2 and out == ""
    assert message in err


def test_kinds_by_any_name() -> None:
    for spelling in ("routes", "route", "Route", "ROUTES"):
        assert (resolve_kind(spelling).kind, resolve_kind(spelling).path) == ("Route", "routes")
    for spelling in ("retry-policies", "retry-policy", "RetryPolicy", "retrypolicies"):
        info = resolve_kind(spelling)
        assert (info.kind, info.path) == ("RetryPolicy", "retry-policies")
    assert resolve_kind("service_policies").kind == "ServicePolicy"
    assert resolve_kind("mesh").singleton == "mesh"  # one document, at /v1/mesh


VALID = """\
kind: Listener
name: public
spec: {port: 8080}
---
kind: Route
name: web
spec:
  listeners: [public]
  rules:
    - backends: [{service: web}]
"""


def test_validate_accepts_valid_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(VALID)
    code, out, err = run(capsys, "validate", "-f", str(path))
    assert code == 0, err
    assert out.strip() == f"{path}: 2 documents valid"
    as_json = tmp_path / "ok.json"
    as_json.write_text(json.dumps(list(yaml.safe_load_all(VALID))))
    assert run(capsys, "validate", "-f", str(as_json))[0] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Valid alone, not together: the route names a listener the file does not have.
        (
            VALID.replace("listeners: [public]", "listeners: [nope]"),
            "[1] Route/web spec.listeners[0]: no listener 'nope'",
        ),
        (VALID.replace("port: 8080", "port: 99999"), "[0] Listener/public spec.port:"),
        (VALID.replace("kind: Route", "kind: Rout"), "[1] Rout/web kind: kind must be one of"),
        ("kind: Listener\nname: a\nspec: {port: [}\n", "body: "),
        (VALID + "---\n" + VALID.split("---\n")[0], "listed twice"),
    ],
)
def test_validate_names_the_field_and_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, out, err = run(capsys, "validate", "-f", str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"error: {path}: ")
    assert expected in err, err


def test_validate_reports_a_yaml_syntax_error_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: Listener\nname: a\nspec:\n  port: [8080\n")
    code, _, err = run(capsys, "validate", "-f", str(path))
    assert code == 1
    assert "(line 5" in err or "(line 4" in err, err


def test_validate_of_a_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "validate", "-f", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read" in err


def test_problem_details_are_shown_field_by_field() -> None:
    lines = problem_lines(
        {
            "type": "urn:xds-server:problem:invalid-document",
            "title": "Invalid document",
            "status": 422,
            "detail": "the apply has 2 problem(s); nothing was written",
            "errors": [
                {
                    "field": "spec.port",
                    "reason": "too big",
                    "kind": "Listener",
                    "name": "a",
                    "index": 0,
                },
                {"field": "body", "reason": "bad YAML", "line": 3, "column": 7},
            ],
        },
        422,
    )
    assert lines == [
        "error: Invalid document (422): the apply has 2 problem(s); nothing was written",
        "  [0] Listener/a spec.port: too big",
        "  body: bad YAML (line 3, column 7)",
    ]


def test_validate_a_directory_of_documents(capsys: pytest.CaptureFixture[str]) -> None:
    examples = ROOT / "api" / "examples"
    code, out, err = run(capsys, "validate", "-f", str(examples))
    assert code == 0, err
    assert out.startswith(f"{examples}: ") and out.rstrip().endswith("documents valid")


def test_a_directory_is_its_files_in_name_order_a_later_document_replacing(
    tmp_path: Path,
) -> None:
    (tmp_path / "b.yaml").write_text(
        "kind: Listener\nname: public\nspec: {port: 2}\n---\n"
        "kind: Route\nname: web\nspec: {listeners: [public]}\n"
    )
    (tmp_path / "a.json").write_text(
        json.dumps([{"kind": "Listener", "name": "public", "spec": {"port": 1}}])
    )
    (tmp_path / "notes.txt").write_text("not read")
    documents = directory_documents(tmp_path)
    assert [(d["kind"], d["name"], d["spec"]) for d in documents] == [
        ("Listener", "public", {"port": 2}),
        ("Route", "web", {"listeners": ["public"]}),
    ]


def test_a_directory_without_documents_or_with_bad_yaml(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "apply", "-f", str(tmp_path))
    assert code == 2 and "holds no document files" in err
    (tmp_path / "broken.yaml").write_text("kind: Listener\nname: [a\n")
    code, _, err = run(capsys, "apply", "-f", str(tmp_path))
    assert code == 2 and f"{tmp_path / 'broken.yaml'}: not valid YAML at line" in err


def test_bootstrap_zone_sets_the_node_locality(capsys: pytest.CaptureFixture[str]) -> None:
    plain = printed_bootstrap(capsys, "--node-id", "e1", "--group", "edge")
    zoned = printed_bootstrap(capsys, "--node-id", "e1", "--group", "edge", "--zone", "us-east-1a")
    assert zoned["node"] == {"id": "e1", "cluster": "edge", "locality": {"zone": "us-east-1a"}}
    assert {**zoned, "node": plain["node"]} == plain  # nothing else differs
    code, out, err = run(capsys, "bootstrap", "--node-id", "a", "--group", "b", "--zone", "a b")
    assert code == 2 and out == "" and "--zone" in err
