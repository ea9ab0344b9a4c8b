"""``xds-server serve``'s command line: every flag, its variable, and the error form."""

from __future__ import annotations

import pytest

from xds_server.cli import main
from xds_server.cli.serve import parse_serve, with_bare_flag_values
from xds_server.settings import DEFAULT_STORE, Address

FLAGS = (
    "--ads-listen", "--admin-listen", "--registry", "--store", "--log-level", "--log-format",
    "--debounce", "--max-delay", "--consul-addr", "--consul-token", "--consul-datacenters",
    "--admin-tokens", "--insecure-admin", "--ads-tls-cert", "--ads-tls-key", "--ads-client-ca",
    "--ads-verify-node",
)  # fmt: skip


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in out, flag


def test_defaults_flags_and_variables() -> None:
    settings = parse_serve([], {})
    assert (settings.ads_listen, settings.admin_listen) == (
        Address("127.0.0.1", 18000),
        Address("127.0.0.1", 8080),
    )
    assert (settings.registry, settings.store, settings.debounce) == ("static:", DEFAULT_STORE, 0.1)
    env = {"XDS_SERVER_STORE": "consul-kv:xds", "XDS_SERVER_CONSUL_DATACENTERS": "dc1, dc2"}
    settings = parse_serve(["--consul-addr", "consul:8500", "--debounce", "250ms"], env)
    assert (settings.store, settings.consul_datacenters) == ("consul-kv:xds", ("dc1", "dc2"))
    assert (settings.consul_addr, settings.consul_token, settings.debounce) == (
        "consul:8500",
        None,
        0.25,
    )
    assert parse_serve(["--store", "sqlite:a.db"], env).store == "sqlite:a.db"  # the flag wins


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ads-verify-node"], ["--ads-verify-node", "group"]),
        (["--ads-verify-node", "--x"], ["--ads-verify-node", "group", "--x"]),
        (["--ads-verify-node", "id"], ["--ads-verify-node", "id"]),
        (["--ads-verify-node=id"], ["--ads-verify-node=id"]),
    ],
)
def test_a_bare_verify_node_means_group(args: list[str], expected: list[str]) -> None:
    assert with_bare_flag_values(args) == expected


def test_a_bad_value_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--store", "nope"]) == 2
    assert capsys.readouterr().err == (
        "xds-server serve: --store: expected sqlite:PATH or consul-kv:PREFIX, got 'nope'\n"
    )
