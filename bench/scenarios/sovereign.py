"""sovereign: the Python peer (PyPI ``sovereign``, REST-JSON xDS) serving the same clusters.

Sovereign pins FastAPI/uvicorn versions older than ours, so it lives in its own virtualenv
(``.venv/opt/sovereign``, created with ``pip install sovereign`` on first use). It serves the
same 1,000 clusters (our translation, as JSON) from a Python template; N REST pollers
(Envoy's ``api_type: REST``, refresh every second) fetch them. Against it: N ADS streams
that subscribe to CDS only, on xds-server. Both run one process (Sovereign: one gunicorn
worker), on the same cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import report
from bench.procs import Sampler, Subprocess, free_port
from bench.scenarios.common import connect, fleet_spec
from bench.simulator.fleet import Fleet
from bench.stack import REPO, Context, Stack

VENV = REPO / ".venv" / "opt" / "sovereign"
REQUIREMENT = "sovereign>=0.32,<0.33"

TEMPLATE = '''\
"""Clusters for Sovereign: the template context's list, as is."""


def call(clusters, **kwargs):
    return clusters
'''


def ensure_sovereign() -> tuple[Path | None, str]:
    """The ``sovereign`` executable (installing it on first use), or None and why not."""
    exe = VENV / "bin" / "sovereign"
    python = VENV / "bin" / "python"
    if not exe.exists():
        try:
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", REQUIREMENT],
                check=True,
                timeout=900,
            )
        except (OSError, subprocess.SubprocessError) as error:
            return None, f"pip install {REQUIREMENT!r} into {VENV} failed: {error}"
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('sovereign'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return None, f"sovereign is not importable in {VENV}: {probe.stderr.strip()[-300:]}"
    return exe, probe.stdout.strip()


def _clusters_json(ctx: Context) -> list[dict[str, Any]]:
    from google.protobuf.json_format import MessageToDict

    from xds_server.translate import translate

    translation = translate(ctx.workload.inventory(), ctx.workload.config())
    clusters = []
    for message in translation.default.clusters:
        data = MessageToDict(message, preserving_proto_field_name=True)
        data["@type"] = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        clusters.append(data)
    return clusters


class Sovereign:
    def __init__(self, ctx: Context, exe: Path) -> None:
        directory = ctx.work / "sovereign"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "clusters.json").write_text(json.dumps(_clusters_json(ctx)))
        (directory / "clusters_template.py").write_text(TEMPLATE)
        (directory / "config.yaml").write_text(
            json.dumps(
                {
                    "templates": {
                        "default": [
                            {
                                "type": "clusters",
                                "spec": {
                                    "protocol": "python",
                                    "path": str(directory / "clusters_template.py"),
                                },
                            }
                        ]
                    },
                    "template_context": {
                        "context": {
                            "clusters": {
                                "protocol": "file",
                                "serialization": "json",
                                "path": str(directory / "clusters.json"),
                            }
                        }
                    },
                }
            )
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = Subprocess(
            [str(exe)],
            directory / "sovereign.log",
            env={
                "SOVEREIGN_CONFIG": f"file://{directory / 'config.yaml'}",
                "SOVEREIGN_HOST": "127.0.0.1",
                "SOVEREIGN_PORT": str(self.port),
                "SOVEREIGN_WORKERS": "1",
                "SOVEREIGN_WORKER_TIMEOUT": "600",
                "SOVEREIGN_ENABLE_ACCESS_LOGS": "false",
                "SOVEREIGN_PRELOAD": "true",
            },
            cwd=directory,
        )
        self.sampler: Sampler | None = None

    def __enter__(self) -> Sovereign:
        self.process.start(None)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthcheck", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            self.process.stop()
            raise RuntimeError("sovereign did not answer /healthcheck within 120 s")
        self.sampler = Sampler(self._worker_pid())
        return self

    def _worker_pid(self) -> int:
        """The gunicorn worker (the process that serves), else the arbiter."""
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            pids = children.read_text().split()
            if pids:
                return int(pids[0])
        except OSError:
            pass
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        self.process.stop()


def _measure(
    ctx: Context, fleet_target: str, n: int, mode: str, sampler: Sampler, quiet: float
) -> dict[str, Any]:
    with Fleet(
        fleet_spec(ctx, fleet_target, n, mode, follow=frozenset({"cds"}), prefix=f"sov-{mode}")
    ) as fleet:
        start = fleet.t0
        sync = connect(fleet, n)
        synced = time.monotonic()
        time.sleep(1.0)
        steady_start = time.monotonic()
        time.sleep(quiet)
        steady_end = time.monotonic()
    return {
        "all_have_clusters_s": sync["all_synced_s"],
        "synced": sync["synced"],
        "failed": sync["failed"],
        "errors": sync["errors"],
        "cds_bytes_per_proxy": sync["per_type"]["cds"]["bytes_received"] / max(1, n),
        "clusters_per_response": sync["per_type"]["cds"]["resources"]
        / max(1, sync["per_type"]["cds"]["responses"]),
        "during_connect": sampler.window(start, synced),
        "steady": sampler.window(steady_start, steady_end),
    }


def run(ctx: Context) -> dict[str, Any]:
    exe, detail = ensure_sovereign()
    if exe is None:
        ctx.say(f"sovereign: skipped: {detail}")
        return {"skipped": detail, "targets": []}
    quiet = 5.0 if ctx.quick else 10.0
    runs = []
    targets = []
    for n in ctx.proxies:
        ctx.say(f"sovereign {detail}: {n} REST pollers (1 s refresh) fetch 1,000 clusters")
        with Sovereign(ctx, exe) as sovereign:
            assert sovereign.sampler is not None
            theirs = _measure(ctx, sovereign.base, n, "rest", sovereign.sampler, quiet)
        ctx.say(f"sovereign: the same {n} as ADS CDS-only streams on xds-server")
        with Stack(ctx, "static", f"sov-{n}") as stack:
            assert stack.server is not None and stack.server.sampler is not None
            ours = _measure(ctx, stack.ads, n, "sotw", stack.server.sampler, quiet)
        a, b = theirs["all_have_clusters_s"], ours["all_have_clusters_s"]
        ratio = a / b if a and b else None
        runs.append(
            {
                "proxies": n,
                "sovereign_version": detail,
                "sovereign": theirs,
                "xds_server": ours,
                "ratio_sovereign_to_ours": ratio,
            }
        )
        targets.append(
            report.target(
                f"{n} clients have all clusters: Sovereign vs xds-server",
                "xds-server ahead",
                f"Sovereign {report.fmt(a, 's') if a else 'incomplete'} vs ours "
                f"{report.fmt(b, 's') if b else 'incomplete'}"
                + (f" ({ratio:.1f}x)" if ratio else ""),
                b is not None and (a is None or b < a),
            )
        )
        targets.append(
            report.target(
                f"server CPU, {n} clients, nothing changing",
                "informative",
                f"Sovereign {theirs['steady'].get('cpu_percent', float('nan')):.0f}% (polling) vs "
                f"ours {ours['steady'].get('cpu_percent', float('nan')):.1f}% (streams)",
                None,
            )
        )
    return {"runs": runs, "targets": targets}
