"""The ``xds-server`` command: ``serve`` runs the control plane; the other commands talk to a
running one over its REST API (``--server``, ``XDS_SERVER_URL``), except ``validate`` and
``bootstrap``, which work offline.

Every failure is a message on stderr and a non-zero exit: 1 when the server refused or could
not be reached, 2 for a wrong command line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml
from rich.text import Text

from xds_server.cli import mesh as mesh_command
from xds_server.cli import render
from xds_server.cli import serve as serve_command
from xds_server.cli import store as store_command
from xds_server.cli.client import DEFAULT_SERVER, ApiClient, CliError, error_item_line
from xds_server.cli.files import read_documents
from xds_server.cli.typer_app import command_group
from xds_server.model import KINDS, KindInfo

HELP = """An xDS control plane for Envoy, and the command line of its REST API.

`serve` runs the server. The other commands talk to a running server (--server,
XDS_SERVER_URL), except `validate` and `bootstrap`, which need none."""

app = command_group("xds-server", HELP)


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


class BootstrapFormat(StrEnum):
    yaml = "yaml"
    json = "json"


#: The connection and output flags are taken before the command (``xds-server --server URL
#: status``) and after it (``xds-server status --server URL``), like kubectl's; after wins.
OutputOption = Annotated[
    Output | None, typer.Option("--output", "-o", help="table (default), json or yaml.")
]
ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        help=f"The server's REST API (admin) URL (env XDS_SERVER_URL; default {DEFAULT_SERVER}).",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="Sent as 'Authorization: Bearer TOKEN' (env XDS_SERVER_TOKEN)."),
]
FileOption = Annotated[
    str,
    typer.Option(
        "--filename",
        "-f",
        help="A YAML stream ('---' between documents) or JSON; '-' reads stdin; a directory: "
        "its .yaml, .yml and .json files together (a later file's document replaces an earlier "
        "one's).",
    ),
]
KindArgument = Annotated[
    str, typer.Argument(help="listeners, routes, retry-policies, … (or Route, route).")
]


@dataclass(frozen=True, slots=True)
class Connection:
    """The flags given before the command (or their environment variables)."""

    server: str
    token: str | None
    timeout: float
    output: Output | None


def _connection(ctx: typer.Context) -> Connection:
    found = ctx.obj
    assert isinstance(found, Connection)
    return found


def client(ctx: typer.Context, server: str | None, token: str | None) -> ApiClient:
    """The REST client: the command's own ``--server`` and ``--token``, else those before it."""
    before = _connection(ctx)
    return ApiClient(
        server if server is not None else before.server,
        token if token is not None else before.token,
        before.timeout,
    )


def output_of(ctx: typer.Context, output: Output | None) -> Output:
    """The command's own ``-o``, else the one before it, else a table."""
    return output or _connection(ctx).output or Output.table


def fail(error: CliError) -> typer.Exit:
    for line in error.lines:
        print(line, file=sys.stderr)
    return typer.Exit(error.code)


@app.callback()
def options(
    ctx: typer.Context,
    server: Annotated[
        str,
        typer.Option(envvar="XDS_SERVER_URL", help="The server's REST API (admin) URL."),
    ] = DEFAULT_SERVER,
    token: Annotated[
        str | None,
        typer.Option(envvar="XDS_SERVER_TOKEN", help="Sent as 'Authorization: Bearer TOKEN'."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 30.0,
    output: OutputOption = None,
) -> None:
    ctx.obj = Connection(server, token, timeout, output)


# -- serve --------------------------------------------------------------------------------------


serve_command.register(app)  # every flag mirrored by an XDS_SERVER_* variable


# -- kinds --------------------------------------------------------------------------------------


def _key(text: str) -> str:
    return text.replace("-", "").replace("_", "").lower()


def resolve_kind(text: str) -> KindInfo:
    """``routes``, ``route``, ``Route`` → the ``Route`` row of the kinds table; unknown →
    ``CliError``."""
    wanted = _key(text)
    for info in KINDS:
        if wanted in {_key(info.kind.value), _key(info.path), _key(info.singular)}:
            return info
    choices = ", ".join(info.path for info in KINDS)
    raise CliError([f"error: unknown kind {text!r}; expected one of {choices}"], code=2)


# -- apply, get, delete -------------------------------------------------------------------------


@app.command()
def apply(
    ctx: typer.Context,
    filename: FileOption,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and show what would change; save nothing.")
    ] = False,
    output: OutputOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Create or replace every document of a file, in one revision."""
    try:
        raw, is_json = read_documents(filename)
        answer = client(ctx, server, token).json(
            "POST",
            "/v1/apply",
            query={"dry_run": dry_run or None},
            body=raw,
            content_type="application/json" if is_json else "application/yaml",
        )
    except CliError as error:
        raise fail(error) from None
    if _dumped(answer, output_of(ctx, output)):
        return
    prefix = "(dry run) " if answer.get("dry_run") else ""
    operations = {(c["kind"], c["name"]): c["operation"] for c in answer.get("changes", [])}
    for document in answer.get("documents") or []:
        key = (document["kind"], document["name"])
        operation = operations.get(key, document["operation"]) if prefix else document["operation"]
        if prefix and operation != "unchanged":
            operation = f"would be {operation}"
        print(f"{prefix}{document['kind']}/{document['name']} {operation}")
        for warning in document.get("warnings") or []:
            print(f"  warning: {error_item_line(warning)}")
    revision, base = answer.get("revision"), answer.get("base_revision")
    if answer.get("dry_run"):
        print(f"(dry run) revision {base} -> {revision}; nothing was saved")
    elif revision == base:
        print(f"revision {revision} (nothing changed)")
    else:
        print(f"revision {revision}")


def _all_pages(api: ApiClient, path: str) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        page = api.json("GET", path, query={"limit": 1000, "page_token": token})
        yield from page.get("items", [])
        token = page.get("next_page_token")
        if not token:
            return


def _dumped(value: Any, output: Output) -> bool:
    """Print ``value`` as JSON or YAML unless the output is a table; whether it did."""
    if output is Output.table:
        return False
    if output is Output.yaml:
        render.print_yaml(value if isinstance(value, list) else [value])
    else:
        render.print_json(value)
    return True


@app.command()
def get(
    ctx: typer.Context,
    kind: KindArgument,
    name: Annotated[str | None, typer.Argument(help="One document; all when left out.")] = None,
    output: OutputOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Show documents of one kind (all of them, or one by name)."""
    try:
        info = resolve_kind(kind)
        path = info.path
        api = client(ctx, server, token)
        if info.singleton is not None:
            name = _singleton_name(info, name)
            documents = [api.json("GET", info.url(name))]
        elif name is not None:
            documents = [api.json("GET", info.url(_quote(name)))]
        else:
            documents = list(_all_pages(api, f"/v1/{path}"))
    except CliError as error:
        raise fail(error) from None
    output = output_of(ctx, output)
    if output is Output.json:
        render.print_json(documents[0] if name is not None else documents)
        return
    if output is Output.yaml:
        render.print_yaml(documents)
        return
    if not documents:
        print(f"no {path}", file=sys.stderr)
        return
    render.print_table(
        ("NAME", "REVISION", "UPDATED", "WARNINGS", "SUMMARY"),
        (
            (
                d["name"],
                str(d.get("revision", "")),
                render.ago(d.get("updated_at")),
                str(len(d.get("warnings") or [])),
                render.summary(d),
            )
            for d in documents
        ),
    )


def _singleton_name(info: KindInfo, name: str | None) -> str:
    """A one-document kind's name: the one it has, whether given or not."""
    assert info.singleton is not None
    if name not in (None, info.singleton):
        raise CliError([f"error: there is one {info.kind.value}, named {info.singleton!r}"], code=2)
    return info.singleton


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


@app.command()
def delete(
    ctx: typer.Context,
    kind: KindArgument,
    name: Annotated[str | None, typer.Argument(help="The document's name (none for mesh).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check only; delete nothing.")] = False,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Delete one document (refused while others refer to it)."""
    try:
        info = resolve_kind(kind)
        kind_name = info.kind.value
        if info.singleton is not None:
            name = _singleton_name(info, name)
        elif name is None:
            raise CliError([f"error: which {info.singular}? give its name"], code=2)
        answer = client(ctx, server, token).request(
            "DELETE", info.url(_quote(name)), query={"dry_run": dry_run or None}
        )
    except CliError as error:
        raise fail(error) from None
    if dry_run:
        print(f"(dry run) {kind_name}/{name} would be deleted; nothing was saved")
    else:
        revision = answer.headers.get("x-config-revision")
        print(f"{kind_name}/{name} deleted" + (f" (revision {revision})" if revision else ""))


# -- status -------------------------------------------------------------------------------------


@app.command()
def status(
    ctx: typer.Context,
    node_id: Annotated[
        str | None, typer.Argument(help="One proxy in detail; all of them when left out.")
    ] = None,
    output: OutputOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """The sync status of every proxy (like istioctl proxy-status), or of one in detail."""
    try:
        api = client(ctx, server, token)
        if node_id is not None:
            proxies = [api.json("GET", f"/v1/proxies/{_quote(node_id)}")]
        else:
            proxies = api.json("GET", "/v1/proxies")["items"]
    except CliError as error:
        raise fail(error) from None
    if _dumped(proxies[0] if node_id is not None else proxies, output_of(ctx, output)):
        return
    if node_id is not None:
        _status_of_one(proxies[0])
        return
    if not proxies:
        print("no proxies are connected", file=sys.stderr)
        return
    # A REPLICA column once the fleet (``--store consul-kv``) spans more than one replica.
    fleet = len({p.get("replica") for p in proxies if p.get("replica")}) > 1
    # An AGENT column (the user agent) once a client that is not an Envoy is connected.
    agents = any(p.get("client_type", "envoy") != "envoy" for p in proxies)
    render.print_table(
        (
            "NODE",
            "GROUP",
            *(("REPLICA",) if fleet else ()),
            "CONNECTED",
            "STREAM",
            "ENVOY",
            *(("AGENT",) if agents else ()),
            *render.TYPE_COLUMNS,
        ),
        [_status_row(proxy, fleet, agents) for proxy in proxies],
    )


def _status_row(
    proxy: dict[str, Any], fleet: bool = False, agents: bool = False
) -> list[str | Text]:
    types = proxy.get("types", {})
    cells = [
        render.status_text(types[t]["status"]) if t in types else render.status_text("-")
        for t in render.TYPE_COLUMNS
    ]
    state = "yes" if proxy["connected"] else f"no ({render.ago(proxy['disconnected_at'])})"
    return [
        proxy["node_id"],
        proxy["group"],
        *((str(proxy.get("replica") or "-"),) if fleet else ()),
        state,
        proxy["stream_kind"],
        proxy["envoy_version"] or "-",
        # The user agent ("envoy 1.40.0", "gRPC Python 1.76.0").
        *((str(proxy.get("user_agent") or "-"),) if agents else ()),
        *cells,
    ]


def _status_of_one(proxy: dict[str, Any]) -> None:
    connected = (
        f"connected since {proxy['connected_since']}"
        if proxy["connected"]
        else f"disconnected at {proxy['disconnected_at']}"
    )
    print(
        f"{proxy['node_id']} (group {proxy['group']}, Envoy {proxy['envoy_version']}, "
        f"{proxy['stream_kind']}, {proxy['peer']}): {proxy['status']}, {connected}"
    )
    extra = [f"user agent {proxy['user_agent']}"] if proxy.get("user_agent") else []
    if proxy.get("replica"):
        extra.append(f"replica {proxy['replica']}")
    if extra:
        print(", ".join(extra))
    rows = []
    nacks = []
    for short, entry in proxy.get("types", {}).items():
        rows.append(
            [
                short,
                render.status_text(entry["status"]),
                render.short_version(entry["sent_version"]),
                render.ago(entry["sent_at"]),
                render.short_version(entry["acked_version"]),
                str(entry["resources"]),
            ]
        )
        nack = entry.get("last_nack")
        if nack:
            nacks.append(f"{short} NACK of {nack['version']} at {nack['at']}: {nack['message']}")
    render.print_table(("TYPE", "STATUS", "SENT", "SENT AGO", "ACKED", "RESOURCES"), rows)
    for line in nacks:
        print(line)


# -- events -------------------------------------------------------------------------------------


@app.command()
def events(
    ctx: typer.Context,
    types: Annotated[
        str | None, typer.Option(help="Only these types, comma-separated (e.g. nack,ack).")
    ] = None,
    since: Annotated[
        int | None, typer.Option(min=0, help="Start after this event id (0: all kept).")
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Exit after this many events.")] = None,
    output: Annotated[
        Output | None, typer.Option("--output", "-o", help="table (one line per event) or json.")
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Follow the server's events (config revisions, snapshots, proxies, ACK/NACK)."""
    as_table = output_of(ctx, output) is Output.table
    stream = client(ctx, server, token).lines("/v1/events", {"types": types, "since": since})
    try:
        for seen, (kind, event) in enumerate(_server_sent_events(stream), start=1):
            if as_table:
                print(_event_line(kind, event), flush=True)
            else:
                print(json.dumps(event), flush=True)
            if count is not None and seen >= count:
                return
    except CliError as error:
        raise fail(error) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _server_sent_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(event type, data)`` of each frame of a ``text/event-stream`` with data."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
            continue
        if data:
            yield fields.get("event", "message"), json.loads("\n".join(data))
        fields, data = {}, []


def _event_line(kind: str, event: dict[str, Any]) -> str:
    details = " ".join(
        f"{key}={value}"
        for key, value in event.items()
        if key not in ("id", "type", "time") and value is not None
    )
    return f"{event.get('id', '-')} {event.get('time', '-')} {kind} {details}".rstrip()


# -- history and rollback -----------------------------------------------------------------------


@app.command()
def history(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    name: Annotated[str | None, typer.Option(help="Only documents with this name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Entries to show.")] = 20,
    output: OutputOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Config history, newest revision first."""
    try:
        kind_name = resolve_kind(kind).kind.value if kind is not None else None
        page = client(ctx, server, token).json(
            "GET", "/v1/history", query={"kind": kind_name, "name": name, "limit": limit}
        )
    except CliError as error:
        raise fail(error) from None
    entries = page.get("items", [])
    if _dumped(entries, output_of(ctx, output)):
        return
    if not entries:
        print("no history yet", file=sys.stderr)
        return
    render.print_table(
        ("REVISION", "TIME", "ACTOR", "OPERATION", "DOCUMENT", "NOTE"),
        (
            (
                str(e["revision"]),
                e["time"],
                e["actor"],
                e["operation"],
                f"{e['kind']}/{e['name']}",
                e.get("note") or "",
            )
            for e in entries
        ),
    )


@app.command()
def rollback(
    ctx: typer.Context,
    revision: Annotated[int, typer.Argument(min=0, help="The revision to restore (0: empty).")],
    note: Annotated[str | None, typer.Option(help="Recorded in history.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; save nothing.")
    ] = False,
    output: OutputOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Restore the documents of an earlier revision, as a new revision."""
    body: dict[str, Any] = {"revision": revision}
    if note is not None:
        body["note"] = note
    try:
        answer = client(ctx, server, token).json(
            "POST",
            "/v1/rollback",
            query={"dry_run": dry_run or None},
            body=json.dumps(body).encode(),
        )
    except CliError as error:
        raise fail(error) from None
    if _dumped(answer, output_of(ctx, output)):
        return
    prefix = "(dry run) " if answer.get("dry_run") else ""
    for change in answer.get("changes", []):
        print(f"{prefix}{change['kind']}/{change['name']} {change['operation']}")
    if answer["revision"] == answer["base_revision"]:
        print(f"revision {answer['revision']} already has the documents of revision {revision}")
    elif prefix:
        print(f"(dry run) would restore revision {revision} as revision {answer['revision']}")
    else:
        print(f"restored revision {revision} as revision {answer['revision']}")


# -- offline: validate, bootstrap ---------------------------------------------------------------


@app.command()
def validate(filename: FileOption) -> None:
    """Check documents offline: syntax, each document, and the documents together."""
    from xds_server.cli.validate import validate_text

    try:
        raw, is_json = read_documents(filename)
    except CliError as error:
        raise fail(error) from None
    result = validate_text(raw, json_body=is_json)
    for warning in result.warnings:
        print(f"warning: {error_item_line(warning)}", file=sys.stderr)
    if not result.ok:
        print(f"error: {filename}: {result.summary}", file=sys.stderr)
        for problem in result.errors:
            print("  " + error_item_line(problem), file=sys.stderr)
        raise typer.Exit(1)
    count = len(result.documents)
    print(f"{filename}: {count} document{'s' if count != 1 else ''} valid")


@app.command()
def bootstrap(
    node_id: Annotated[
        str | None,
        typer.Option("--node-id", help="The Envoy's node id (a sidecar's: SERVICE-sidecar-HOST)."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option("--group", help="Its proxy group, node.cluster (a sidecar's: SERVICE)."),
    ] = None,
    sidecar: Annotated[
        str | None,
        typer.Option(
            "--sidecar", help="Bootstrap a mesh sidecar of this service.", metavar="SERVICE"
        ),
    ] = None,
    ads: Annotated[
        str, typer.Option("--ads", help="The server's ADS address, HOST:PORT.")
    ] = "127.0.0.1:18000",
    delta: Annotated[bool, typer.Option("--delta", help="Incremental xDS (DELTA_GRPC).")] = False,
    admin: Annotated[
        str | None,
        typer.Option(
            "--admin",
            help="Envoy's own admin address, HOST:PORT (port 0: any; default 127.0.0.1:9901,"
            " a sidecar's 127.0.0.1:19000).",
        ),
    ] = None,
    admin_port: Annotated[
        int | None,
        typer.Option("--admin-port", help="Only the admin port (0: any).", min=0, max=65535),
    ] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="TLS to the control plane (implied by --ca/--cert).")
    ] = False,
    ca: Annotated[
        str | None, typer.Option("--ca", help="CA file verifying the server (default: system).")
    ] = None,
    cert: Annotated[
        str | None, typer.Option("--cert", help="Envoy's client certificate (mTLS).")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Its private key (mTLS).")] = None,
    sni: Annotated[
        str | None, typer.Option("--sni", help="Server name to verify (default: ADS host).")
    ] = None,
    zone: Annotated[
        str,
        typer.Option(
            "--zone", help="node.locality.zone: prefer endpoints of this zone.", metavar="ZONE"
        ),
    ] = "",
    output: Annotated[
        BootstrapFormat, typer.Option("--output", "-o", help="yaml (default) or json.")
    ] = BootstrapFormat.yaml,
    grpc: Annotated[
        bool,
        typer.Option("--grpc", help="A proxyless gRPC application's (GRPC_XDS_BOOTSTRAP) JSON."),
    ] = False,
) -> None:
    """Print an Envoy bootstrap for this server (envoy -c FILE); --sidecar SERVICE for a mesh
    sidecar of SERVICE; --grpc for a gRPC application's xds:/// resolver."""
    from xds_server.cli.bootstrap import (
        EDGE_ADMIN,
        SIDECAR_ADMIN,
        BootstrapError,
        HostPort,
        TlsOptions,
        grpc_bootstrap,
        sidecar_node,
    )
    from xds_server.cli.bootstrap import bootstrap as build

    if grpc:
        try:
            if node_id is None:
                raise BootstrapError("--node-id: required")
            if sidecar is not None or delta or tls or any(v is not None for v in (ca, cert, key)):
                raise BootstrapError("--grpc: no --sidecar, --delta or TLS options (plaintext ADS)")
            grpc_document = grpc_bootstrap(
                node_id, group=group or "", ads=HostPort.parse(ads, "--ads"), zone=zone
            )
        except BootstrapError as error:
            raise fail(CliError([f"error: {error}"], code=2)) from None
        render.print_json(grpc_document)
        return
    try:
        if sidecar is not None:
            node_id, group = sidecar_node(sidecar, group=group, node_id=node_id)
        elif node_id is None or group is None:
            missing = "--node-id" if node_id is None else "--group"
            raise BootstrapError(f"{missing}: required (or --sidecar SERVICE)")
        admin_address = HostPort.parse(
            admin or (EDGE_ADMIN if sidecar is None else SIDECAR_ADMIN), "--admin", any_port=True
        )
        if admin_port is not None:
            admin_address = HostPort(admin_address.host, admin_port)
        tls_options = (
            TlsOptions(ca=ca, cert=cert, key=key, sni=sni)
            if tls or any(v is not None for v in (ca, cert, key, sni))
            else None
        )
        document = build(
            node_id,
            group,
            ads=HostPort.parse(ads, "--ads"),
            delta=delta,
            admin=admin_address,
            tls=tls_options,
            zone=zone,
        )
    except BootstrapError as error:
        raise fail(CliError([f"error: {error}"], code=2)) from None
    if output is BootstrapFormat.json:
        render.print_json(document)
    else:
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))


store_command.register(app)  # store export / store import (offline, on the store itself)


def _dump_mesh(ctx: typer.Context, answer: Any, output: str | None) -> bool:
    return _dumped(answer, output_of(ctx, Output(output) if output is not None else None))


mesh_command.register(app, client, _dump_mesh)  # mesh rotate-root (over REST)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: ``xds-server``."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="xds-server")
    except SystemExit as done:
        code = done.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    return 0
