"""``xds-server serve``: run the control plane. Every flag has an ``XDS_SERVER_*`` variable.

The flags are parsed here (Typer, like every other command) and turned into typed
:class:`~xds_server.settings.Settings` by ``settings_from``, which reads the variables of the
flags not given. ``--ads-verify-node`` takes an optional value: given bare (at the end, or
before another option) it means ``group``; :class:`ServeCommand` supplies that value before
parsing, since Typer's parser has no optional option values.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from xds_server.observability import logs
from xds_server.settings import (
    ENV_PREFIX,
    VERIFY_MODES,
    Settings,
    SettingsError,
    settings_from,
)

VERIFY_NODE = "--ads-verify-node"
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
#: What a bare ``--ads-verify-node`` means.
VERIFY_NODE_DEFAULT = "group"


def _env(name: str) -> str:
    return f"(env {ENV_PREFIX}{name})"


def with_bare_flag_values(args: Sequence[str]) -> list[str]:
    """``args`` with ``group`` after a ``--ads-verify-node`` that has no value."""
    out: list[str] = []
    for index, arg in enumerate(args):
        out.append(arg)
        following = args[index + 1] if index + 1 < len(args) else None
        if arg == VERIFY_NODE and (following is None or following.startswith("-")):
            out.append(VERIFY_NODE_DEFAULT)
    return out


class ServeCommand(TyperCommand):
    """``serve``'s click command: fills in the value of a bare ``--ads-verify-node``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, with_bare_flag_values(args))


def _flag(metavar: str, help: str) -> Any:
    return typer.Option(metavar=metavar, help=help)


Text = str | None
AdsListen = Annotated[Text, _flag("HOST:PORT", f"ADS gRPC address {_env('ADS_LISTEN')}")]
AdminListen = Annotated[Text, _flag("HOST:PORT", f"REST admin address {_env('ADMIN_LISTEN')}")]
Registry = Annotated[Text, _flag("REGISTRY", f"static:PATH or consul {_env('REGISTRY')}")]
Store = Annotated[Text, _flag("STORE", f"sqlite:PATH or consul-kv:PREFIX {_env('STORE')}")]
LogLevel = Annotated[Text, _flag("LEVEL", f"debug|info|warning|error {_env('LOG_LEVEL')}")]
LogFormat = Annotated[Text, _flag("FORMAT", f"json|text {_env('LOG_FORMAT')}")]
Debounce = Annotated[Text, _flag("DURATION", f"quiet time before a rebuild {_env('DEBOUNCE')}")]
MaxDelay = Annotated[Text, _flag("DURATION", f"longest wait under churn {_env('MAX_DELAY')}")]
ConsulAddr = Annotated[Text, _flag("ADDRESS", "Consul address (default CONSUL_HTTP_ADDR)")]
ConsulToken = Annotated[Text, _flag("TOKEN", "Consul ACL token (default CONSUL_HTTP_TOKEN)")]
ConsulDatacenters = Annotated[
    Text, _flag("DCS", f"comma-separated datacenters, local first {_env('CONSUL_DATACENTERS')}")
]
FleetTtl = Annotated[
    Text, _flag("DURATION", f"Consul session TTL of the fleet view {_env('FLEET_TTL')}")
]
ReplicaId = Annotated[
    Text,
    _flag("ID", f"this replica's name in the fleet (default HOST:ADS-PORT) {_env('REPLICA_ID')}"),
]
AdminTokens = Annotated[
    Text, _flag("FILE", "admin API bearer tokens, YAML/JSON (env XDS_SERVER_ADMIN_TOKENS)")
]
InsecureAdmin = Annotated[
    bool | None,
    typer.Option(
        "--insecure-admin",
        help="allow the admin API on a non-loopback address without tokens"
        " (env XDS_SERVER_INSECURE_ADMIN)",
    ),
]
AdsTlsCert = Annotated[Text, _flag("FILE", "ADS server certificate, PEM (env …_ADS_TLS_CERT)")]
AdsTlsKey = Annotated[Text, _flag("FILE", "ADS server private key, PEM (env …_ADS_TLS_KEY)")]
AdsClientCa = Annotated[
    Text, _flag("FILE", "require Envoy client certificates signed by this CA (env …_ADS_CLIENT_CA)")
]
AdsVerifyNode = Annotated[
    Text,
    typer.Option(
        VERIFY_NODE,
        metavar=f"[{'|'.join(VERIFY_MODES)}]",
        help="the node's group (default), id or both must be a SAN of its client certificate"
        " (env XDS_SERVER_ADS_VERIFY_NODE)",
    ),
]


def serve(  # one parameter per flag: how Typer declares options
    ctx: typer.Context,
    ads_listen: AdsListen = None,
    admin_listen: AdminListen = None,
    registry: Registry = None,
    store: Store = None,
    log_level: LogLevel = None,
    log_format: LogFormat = None,
    debounce: Debounce = None,
    max_delay: MaxDelay = None,
    consul_addr: ConsulAddr = None,
    consul_token: ConsulToken = None,
    consul_datacenters: ConsulDatacenters = None,
    fleet_ttl: FleetTtl = None,
    replica_id: ReplicaId = None,
    admin_tokens: AdminTokens = None,
    insecure_admin: InsecureAdmin = None,
    ads_tls_cert: AdsTlsCert = None,
    ads_tls_key: AdsTlsKey = None,
    ads_client_ca: AdsClientCa = None,
    ads_verify_node: AdsVerifyNode = None,
) -> None:
    """Run the xDS control plane for Envoy."""
    try:
        settings = settings_from(ctx.params)
    except SettingsError as error:
        print(f"xds-server serve: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    raise typer.Exit(run(settings))


def run(settings: Settings) -> int:
    """Configure logging and run the server until SIGTERM/SIGINT."""
    from xds_server.app import serve as serve_app  # the whole server: only when it runs

    logs.configure(settings.log_level, settings.log_format)
    return asyncio.run(serve_app(settings))


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``xds-server`` Typer app."""
    app.command("serve", cls=ServeCommand, context_settings=HELP_OPTIONS)(serve)


def parse_serve(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """The settings ``xds-server serve ARGV`` would run with, ``environ`` for the variables
    (default ``os.environ``). Raises ``SettingsError``; a malformed command line raises
    Typer's usage error."""
    single = typer.Typer(add_completion=False)
    register(single)
    command = typer.main.get_command(single)
    ctx = command.make_context("xds-server serve", list(argv))
    return settings_from(ctx.params, os.environ if environ is None else environ)
