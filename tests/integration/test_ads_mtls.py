"""A real Envoy talks to ``xds-server serve`` over mutual TLS with ``envoy/bootstrap-mtls.yaml``:
it syncs and carries traffic; an Envoy without a client certificate, or one whose certificate
does not name its proxy group, gets nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.support import seed
from tests.support.envoy import ROOT, bootstrap, free_port, http_get, running_envoy, wait_for
from tests.support.process import ServerProcess
from tests.support.upstream import upstreams

pytestmark = pytest.mark.envoy

BOOTSTRAP_MTLS = ROOT / "envoy" / "bootstrap-mtls.yaml"
SERVER_NAME = "xds-server.example.internal"


def mtls_bootstrap(
    ads_port: int,
    files: dict[str, str | None],
    *,
    node_id: str,
    group: str = "default",
) -> dict[str, Any]:
    """``envoy/bootstrap-mtls.yaml`` with its placeholder paths replaced by ``files``."""
    config = bootstrap(ads_port, node_id=node_id, group=group, source=BOOTSTRAP_MTLS)
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "xds_server"]
    common = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert common["tls_certificates"][0]["certificate_chain"]["filename"].startswith("/etc/")
    if files["cert"] is None:
        del common["tls_certificates"]
    else:
        common["tls_certificates"][0]["certificate_chain"]["filename"] = files["cert"]
        common["tls_certificates"][0]["private_key"]["filename"] = files["key"]
    common["validation_context"]["trusted_ca"]["filename"] = files["ca"]
    return config


def test_envoy_over_mtls_syncs_and_strangers_are_refused(tmp_path: Path) -> None:
    ca = trustme.CA()

    def write(name: str, data: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        return str(path)

    server_cert = ca.issue_cert(SERVER_NAME)
    server_files = {
        "cert": write("server.crt", server_cert.private_key_and_cert_chain_pem.bytes()),
        "key": write("server.key", server_cert.private_key_pem.bytes()),
    }
    ca_file = write("ca.crt", ca.cert_pem.bytes())

    def client_files(label: str, *names: str) -> dict[str, str | None]:
        cert = ca.issue_cert(*names)
        return {
            "cert": write(f"{label}.crt", cert.private_key_and_cert_chain_pem.bytes()),
            "key": write(f"{label}.key", cert.private_key_pem.bytes()),
            "ca": ca_file,
        }

    port = free_port()
    store = tmp_path / "store.db"
    seed.seed_store(store, [seed.listener("public", port), seed.route("web", "public", "web")])
    with upstreams("one") as (one,):
        registry = tmp_path / "registry.yaml"
        registry.write_text(
            f"services:\n  web:\n    endpoints:\n      - {{address: 127.0.0.1, port: {one.port}}}\n"
        )
        server = ServerProcess(
            "--ads-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--registry", f"static:{registry}", "--store", f"sqlite:{store}",
            "--log-format", "text",
            "--ads-tls-cert", server_files["cert"], "--ads-tls-key", server_files["key"],
            "--ads-client-ca", ca_file, "--ads-verify-node",
        ).start()  # fmt: skip
        try:
            good = mtls_bootstrap(
                server.ads_port, client_files("good", "default"), node_id="envoy-good"
            )
            with running_envoy(good) as envoy:
                wait_for(lambda: http_get(port)[1] == "one", 30, "traffic", envoy.check_alive)
                assert envoy.stat("cluster.xds_server.ssl.handshake") >= 1

            # Its certificate names group "edge", but it claims group "default".
            liar = mtls_bootstrap(
                server.ads_port, client_files("liar", "edge", "envoy-liar"), node_id="envoy-liar"
            )
            with running_envoy(liar) as envoy:
                wait_for(
                    lambda: any("refused node=envoy-liar" in line for line in server.output),
                    30,
                    "the refusal in the server log",
                    envoy.check_alive,
                )
                assert envoy.stat("cluster.xds_server.ssl.handshake") >= 1  # TLS was fine
                assert not listeners_of(envoy.config_dump())

            # No client certificate: the handshake fails, no stream ever starts.
            stranger = mtls_bootstrap(
                server.ads_port,
                {"cert": None, "key": None, "ca": ca_file},
                node_id="envoy-stranger",
            )
            with running_envoy(stranger) as envoy:
                wait_for(
                    lambda: (
                        envoy.stat("cluster.xds_server.ssl.connection_error") >= 1
                        or envoy.stat("cluster.xds_server.upstream_cx_connect_fail") >= 1
                    ),
                    30,
                    "a failed TLS handshake",
                    envoy.check_alive,
                )
                assert envoy.stat("cluster.xds_server.ssl.handshake") == 0
                failures = {
                    name: envoy.stat(f"cluster.xds_server.{name}")
                    for name in ("ssl.connection_error", "upstream_cx_connect_fail")
                }
                print(f"Envoy without a client certificate: {failures}")
                assert not listeners_of(envoy.config_dump())
            assert not any("node=envoy-stranger" in line for line in server.output)
        finally:
            server.kill()


def listeners_of(dump: dict[str, Any]) -> list[str]:
    names = []
    for config in dump["configs"]:
        if config["@type"].endswith("ListenersConfigDump"):
            for item in config.get("dynamic_listeners", []):
                names.append(item["name"])
    return names
