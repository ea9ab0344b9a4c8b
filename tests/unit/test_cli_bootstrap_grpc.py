"""``xds-server bootstrap --grpc``: the JSON bootstrap a gRPC application reads from
``GRPC_XDS_BOOTSTRAP`` (gRFC A27)."""

from __future__ import annotations

import json

import pytest

from xds_server.cli import main


def test_prints_the_grpc_bootstrap(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bootstrap", "--grpc", "--node-id", "app-1", "--ads", "10.0.0.5:18001"]
    code = main([*argv, "--zone", "us-east-1a", "--group", "apps"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out) == {
        "xds_servers": [
            {
                "server_uri": "10.0.0.5:18001",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": "app-1", "cluster": "apps", "locality": {"zone": "us-east-1a"}},
    }


def test_the_node_always_has_a_locality(capsys: pytest.CaptureFixture[str]) -> None:
    """grpc-js-xds refuses a bootstrap whose node has no locality."""
    assert main(["bootstrap", "--grpc", "--node-id", "app-2"]) == 0
    assert json.loads(capsys.readouterr().out)["node"] == {"id": "app-2", "locality": {}}


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ([], "--node-id: required"),
        (["--node-id", "a", "--delta"], "--grpc: no --sidecar, --delta or TLS"),
        (["--node-id", "a", "--zone", "bad zone"], "--zone"),
    ],
)
def test_refuses_what_it_cannot_use(
    capsys: pytest.CaptureFixture[str], extra: list[str], words: str
) -> None:
    code = main(["bootstrap", "--grpc", *extra])
    assert code == 2 and words in capsys.readouterr().err
