"""Issue 15, acceptance 4: certificate rotation with requests running, real Envoys.

frontend (host one) calls api (host two) through their sidecars every 50 ms while:

- the leaves (``certificate_ttl: 1m``, re-issued at half of it) rotate three times: no request
  fails, the serial both sidecars present (Envoy's ``/certs``) changes each time, to the one
  the server issued, and no listener is modified (``listener_manager.listener_modified``);
- the mesh CA switches from the built-in root to a provided one (a ``Certificate`` holding a
  CA made here), then back to the built-in root: no request fails; the sidecars end up
  trusting only the new root and presenting leaves it issued, no listener modified.

Both share one stack (module scope): the first takes about 95 s (three half-lives of a 1m
TTL, the minimum), the second about 25 s (twice two ``rotation_pause`` of 5 s).

Acceptance 5, each on a stack of its own: ``kill -9`` and a restart on the same SQLite store
keep the root while requests keep succeeding; two replicas on one Consul KV store share the
root, so a sidecar of replica A calls one of replica B.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.consul_double import ConsulDouble
from tests.integration.mesh_rotation_stack import (
    Load,
    MeshStack,
    call_api,
    cert_serials,
    configure,
    connected_nodes,
    connected_replicas,
    free_root_port,
    listener_modified,
    make_ca,
    mesh_spec,
    mesh_stack,
    mesh_status,
    put,
    rejected_updates,
    trusted_serials,
)
from tests.support.envoy import Envoy, wait_for

pytestmark = pytest.mark.envoy

ROTATIONS = 3
TTL = "1m"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshStack]:
    with mesh_stack(tmp_path_factory.mktemp("mesh-rotation")) as started:
        tmp = started.tmp
        server = started.serve(f"sqlite:{tmp / 'store.db'}")
        configure(server.admin, ttl=TTL)
        for service in ("api", "frontend"):
            started.start_sidecar(service, server.ads_port)
        started.wait_for_calls()
        started.wait_for_identities()
        yield started


def _failed(load: Load) -> str:
    failures = load.failures()
    return f"{len(failures)} of {load.sent} requests failed, first ones: {failures[:3]}"


def test_three_leaf_rotations_fail_no_request_and_modify_no_listener(stack: MeshStack) -> None:
    modified = {name: listener_modified(envoy) for name, envoy in stack.sidecars.items()}
    seen = {name: [next(iter(cert_serials(envoy)))] for name, envoy in stack.sidecars.items()}
    changed_at: dict[str, list[float]] = {name: [] for name in stack.sidecars}
    #: What must never be seen (``wait_for`` takes an exception in the probe for "not yet").
    wrong: list[str] = []
    started = time.monotonic()

    def rotated() -> bool:
        for name, envoy in stack.sidecars.items():
            serials = cert_serials(envoy)
            if len(serials) != 1:  # one identity, in every TLS context of the sidecar
                wrong.append(f"{name} presents {serials}")
                continue
            (serial,) = serials
            if serial != seen[name][-1]:
                if serial in seen[name]:
                    wrong.append(f"{name} went back to {serial}")
                seen[name].append(serial)
                changed_at[name].append(time.monotonic() - started)
        return all(len(serials) > ROTATIONS for serials in seen.values())

    with Load(stack.frontend) as load:
        # Three half-lives of a 1m TTL (30 s each) plus slack; the poll reads /certs twice a second.
        wait_for(rotated, 3 * 30 + 45, "three leaf rotations in both sidecars", interval=0.5)
        stack.wait_for_identities()  # what Envoy presents is what the server issued last
    for name, serials in seen.items():
        times = ", ".join(f"{t:.1f}s" for t in changed_at[name])
        print(f"{name}: serials {serials} (changed at {times})")
    print(f"requests: {load.sent} sent, {len(load.failures())} failed")
    assert wrong == []
    assert load.sent > 1000  # ~95 s at one every 50 ms: the load really ran throughout
    assert load.failures() == [], _failed(load)
    after = {name: listener_modified(envoy) for name, envoy in stack.sidecars.items()}
    assert after == modified  # new certificates over SDS drained no listener


def _rotate(
    stack: MeshStack,
    change: Callable[[], object],
    fingerprint: str | None,
    root_serials: set[str] | None,
) -> None:
    """Requests every 50 ms while ``change`` (PUTs, or the rotate-root API) makes the mesh
    rotate to the root with ``fingerprint`` (None: the one ``change`` returns): no request
    fails; the status and both sidecars end up with that root alone (whose serial is in
    ``root_serials``; None: one new root), the sidecars present new leaves, and no listener
    was modified."""
    admin = stack.server.admin
    before = {name: cert_serials(envoy) for name, envoy in stack.sidecars.items()}
    trusted_before = {name: trusted_serials(envoy) for name, envoy in stack.sidecars.items()}
    modified = {name: listener_modified(envoy) for name, envoy in stack.sidecars.items()}

    def trusts_the_new_root_alone(name: str, envoy: Envoy) -> bool:
        trusted = trusted_serials(envoy)
        if root_serials is not None:
            return trusted == root_serials
        return len(trusted) == 1 and trusted.isdisjoint(trusted_before[name])

    def finished() -> bool:
        status = mesh_status(admin)
        return (
            status["rotation"] is None
            and _hex(status["ca"]["fingerprint_sha256"]) == target
            and [_hex(root["fingerprint_sha256"]) for root in status["trust_bundle"]] == [target]
            and all(trusts_the_new_root_alone(n, e) for n, e in stack.sidecars.items())
        )

    with Load(stack.frontend) as load:
        wait_for(lambda: load.sent > 20, 10, "the first requests")
        started = time.monotonic()
        returned = change()
        target = fingerprint or _hex(str(returned))
        wait_for(finished, 40, "the rotation in the status and in the sidecars")
        elapsed = time.monotonic() - started
        stack.wait_for_identities()
        sent_at_end = load.sent
        wait_for(lambda: load.sent > sent_at_end + 20, 10, "requests after the rotation")
    print(
        f"root rotation to {target[:16]}… done in {elapsed:.1f} s;"
        f" requests: {load.sent} sent, {len(load.failures())} failed"
    )
    assert load.failures() == [], _failed(load)
    for name, envoy in stack.sidecars.items():
        assert cert_serials(envoy).isdisjoint(before[name])  # leaves issued by the new root
    after = {name: listener_modified(envoy) for name, envoy in stack.sidecars.items()}
    assert after == modified


def test_switching_builtin_to_provided_and_back_fails_no_request(stack: MeshStack) -> None:
    admin = stack.server.admin
    builtin = mesh_status(admin)["ca"]
    assert builtin["provider"] == "builtin"
    builtin_serials = trusted_serials(stack.sidecars["api"])
    assert len(builtin_serials) == 1
    provided = make_ca()
    provided_fingerprint = (
        x509.load_pem_x509_certificate(provided.certificate.encode())
        .fingerprint(hashes.SHA256())
        .hex()
    )

    def to_provided() -> None:
        put(admin, "certificates/mesh-ca", provided.document_spec())
        put(admin, "mesh", mesh_spec(TTL, provider="provided", certificate="mesh-ca"))

    _rotate(stack, to_provided, provided_fingerprint, {provided.serial})
    # Back to the built-in root (kept in the store): a rotation the other way.
    _rotate(
        stack,
        lambda: put(admin, "mesh", mesh_spec(TTL)),
        _hex(builtin["fingerprint_sha256"]),
        builtin_serials,
    )
    assert mesh_status(admin)["ca"] == builtin


def rotate_root_with_the_cli(admin: str) -> dict[str, Any]:
    """``xds-server mesh rotate-root -o json`` (over REST): the status it printed."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xds_server",
            "--server",
            admin,
            "mesh",
            "rotate-root",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_rotating_the_builtin_root_through_the_api_fails_no_request(stack: MeshStack) -> None:
    """``xds-server mesh rotate-root`` (POST /v1/mesh/rotate-root): the answer holds both roots
    (the new one trusted, the old one still issuing); a second call while it runs is refused
    (409, exit 1); requests every 50 ms meanwhile: 0 failures, and the sidecars end up
    trusting the new root alone and presenting leaves it issued."""
    admin = stack.server.admin
    old = mesh_status(admin)["ca"]
    assert old["provider"] == "builtin"
    answers: list[dict[str, Any]] = []

    def rotate() -> str:
        answer = rotate_root_with_the_cli(admin)
        answers.append(answer)
        again = subprocess.run(
            [sys.executable, "-m", "xds_server", "--server", admin, "mesh", "rotate-root"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert again.returncode == 1 and "already under way" in again.stderr, again
        return str(answer["rotation"]["to"]["fingerprint_sha256"])

    _rotate(stack, rotate, None, None)
    (answer,) = answers
    bundle = [root["fingerprint_sha256"] for root in answer["trust_bundle"]]
    assert answer["ca"]["fingerprint_sha256"] == old["fingerprint_sha256"] == bundle[0]
    assert len(bundle) == 2 and answer["rotation"]["next_step"] == "issue"
    assert "PRIVATE KEY" not in json.dumps(answer)
    now = mesh_status(admin)["ca"]
    assert now["fingerprint_sha256"] == bundle[1] and now["provider"] == "builtin"


def _hex(fingerprint: str) -> str:
    return fingerprint.replace(":", "").lower()


# -- acceptance 5: a restart keeps the root; replicas on Consul KV share it ----------------------


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[MeshStack]:
    with mesh_stack(tmp_path) as started:
        yield started


def test_kill_9_and_restart_keep_the_root_and_the_sidecars_keep_working(
    fresh_stack: MeshStack,
) -> None:
    """The data plane never needs the control plane: requests through the sidecars succeed
    while the server is dead and after it is back (every one of them, no window left out);
    the restarted server, on the same SQLite store and ADS port, issues from the same root,
    and the sidecars reconnect to it and take its new leaves without rejecting anything."""
    stack = fresh_stack
    store = f"sqlite:{stack.tmp / 'store.db'}"
    ads_port = free_root_port(stack.root_address)
    first = stack.serve(store, ads_port=ads_port)
    configure(first.admin)
    for service in ("api", "frontend"):
        stack.start_sidecar(service, ads_port)
    stack.wait_for_calls()
    stack.wait_for_identities()
    before = mesh_status(first.admin)
    serials = {name: cert_serials(envoy) for name, envoy in stack.sidecars.items()}

    with Load(stack.frontend) as load:
        wait_for(lambda: load.sent > 20, 10, "the first requests")
        first.kill()  # SIGKILL
        killed_at, sent_at_kill = time.monotonic(), load.sent
        # Envoy keeps its config: 2 s of requests with no control plane at all.
        wait_for(lambda: load.sent > sent_at_kill + 40, 20, "requests while the server is dead")
        down = load.sent - sent_at_kill
        second = stack.serve(store, ads_port=ads_port)
        wait_for(
            lambda: connected_nodes(second.admin) >= {"frontend-1", "api-1"},
            60,
            "both sidecars reconnected to the restarted server",
        )
        reconnected = time.monotonic() - killed_at
        without_server = load.sent - sent_at_kill
        stack.wait_for_identities({name: second for name in stack.sidecars})
        sent_back = load.sent
        wait_for(lambda: load.sent > sent_back + 20, 10, "requests after the restart")
    after = mesh_status(second.admin)
    print(
        f"restart: {without_server} requests between the kill and the sidecars' reconnection"
        f" ({down} before the restart began), sidecars back after"
        f" {reconnected:.1f} s; requests: {load.sent} sent, {len(load.failures())} failed;"
        f" root {after['ca']['fingerprint_sha256'][:23]}…"
    )
    assert load.failures() == [], _failed(load)
    assert after["ca"] == before["ca"]  # the same root, read back from the store
    assert after["trust_bundle"] == before["trust_bundle"]
    for name, envoy in stack.sidecars.items():
        assert cert_serials(envoy).isdisjoint(serials[name])  # new leaves, from the same root
        assert envoy.stat("control_plane.connected_state") == 1
        assert rejected_updates(envoy) == {}


def test_kill_9_mid_rotation_resumes_it_with_both_roots_trusted(fresh_stack: MeshStack) -> None:
    """The rotation's phase is in the store: a server killed (SIGKILL) after the new root
    joined the trust bundles, and restarted on the same SQLite store, still trusts both
    roots and finishes the rotation (leaves from the new root, then the old one leaves);
    requests every 50 ms through the sidecars the whole time: 0 failures."""
    stack = fresh_stack
    store = f"sqlite:{stack.tmp / 'store.db'}"
    ads_port = free_root_port(stack.root_address)
    first = stack.serve(store, ads_port=ads_port)
    configure(first.admin)
    for service in ("api", "frontend"):
        stack.start_sidecar(service, ads_port)
    stack.wait_for_calls()
    stack.wait_for_identities()
    old = _hex(mesh_status(first.admin)["ca"]["fingerprint_sha256"])
    trusted_before = {name: trusted_serials(envoy) for name, envoy in stack.sidecars.items()}

    with Load(stack.frontend) as load:
        wait_for(lambda: load.sent > 20, 10, "the first requests")
        answer = rotate_root_with_the_cli(first.admin)
        new = _hex(answer["rotation"]["to"]["fingerprint_sha256"])
        wait_for(
            lambda: all(len(trusted_serials(e)) == 2 for e in stack.sidecars.values()),
            20,
            "both roots in both sidecars' trust bundles",
            interval=0.05,
        )
        mid = mesh_status(first.admin)
        first.kill()  # SIGKILL, mid-rotation
        assert mid["rotation"] is not None, mid  # (the first step is 5 s from the next)
        second = stack.serve(store, ads_port=ads_port)
        resumed = mesh_status(second.admin)
        assert [_hex(r["fingerprint_sha256"]) for r in resumed["trust_bundle"]] in (
            [old, new],
            [new, old],
        ), resumed
        assert (
            resumed["rotation"] is not None
            and _hex(resumed["rotation"]["to"]["fingerprint_sha256"]) == new
        )
        wait_for(
            lambda: connected_nodes(second.admin) >= {"frontend-1", "api-1"},
            60,
            "both sidecars reconnected to the restarted server",
        )

        def finished() -> bool:
            status = mesh_status(second.admin)
            return (
                status["rotation"] is None
                and [_hex(r["fingerprint_sha256"]) for r in status["trust_bundle"]] == [new]
                and all(
                    len(trusted_serials(envoy)) == 1
                    and trusted_serials(envoy).isdisjoint(trusted_before[name])
                    for name, envoy in stack.sidecars.items()
                )
            )

        wait_for(finished, 60, "the resumed rotation finished in the status and the sidecars")
        stack.wait_for_identities({name: second for name in stack.sidecars})
        sent_at_end = load.sent
        wait_for(lambda: load.sent > sent_at_end + 20, 10, "requests after the rotation")
    print(
        f"kill -9 mid-rotation: resumed with {len(resumed['trust_bundle'])} roots trusted"
        f" (next step {resumed['rotation']['next_step']}); requests: {load.sent} sent,"
        f" {len(load.failures())} failed"
    )
    assert load.failures() == [], _failed(load)
    for envoy in stack.sidecars.values():
        assert rejected_updates(envoy) == {}


def test_a_sidecar_on_replica_a_calls_one_on_replica_b(fresh_stack: MeshStack) -> None:
    """Two replicas on one Consul KV store issue from the same built-in root (the first to
    need it stores it; the other reads it), each its own leaves: frontend's sidecar, on
    replica A, calls api's, on replica B, over mutual TLS."""
    stack = fresh_stack
    with ConsulDouble(jitter=False) as consul:
        env = {"CONSUL_HTTP_ADDR": consul.url}
        a = stack.serve("consul-kv:xds/mesh", env=env)
        b = stack.serve("consul-kv:xds/mesh", env=env)
        configure(a.admin)
        stack.start_sidecar("frontend", a.ads_port)
        stack.start_sidecar("api", b.ads_port)

        def both_issued(admin: str) -> dict[str, object] | None:
            status = mesh_status(admin)
            issued = {i["service"] for i in status["identities"]}
            return status if issued >= {"frontend", "api"} else None

        on_a = wait_for(lambda: both_issued(a.admin), 30, "replica A's identities")
        on_b = wait_for(lambda: both_issued(b.admin), 30, "replica B's identities")
        assert on_a["ca"] == on_b["ca"]  # one root for both replicas
        stack.wait_for_identities({"frontend": a, "api": b})
        stack.wait_for_calls()
        # Each sidecar on its own replica (a fleet-wide list names the replica of each).
        for admin in (a.admin, b.admin):
            replicas = connected_replicas(admin)
            assert {"frontend-1", "api-1"} & set(replicas)
            if {"frontend-1", "api-1"} <= set(replicas):
                assert replicas["frontend-1"] != replicas["api-1"], replicas
        assert "frontend-1" in connected_nodes(a.admin) and "api-1" in connected_nodes(b.admin)
        answers = [call_api(stack.frontend) for _ in range(20)]
        assert [answer["status"] for answer in answers] == [200] * 20
        seen = json.loads(answers[0]["body"])
        assert seen["instance"] == "api"
        # The caller api's sidecar saw is frontend, by the certificate replica A issued.
        assert "spiffe://mesh.test/service/frontend" in seen["headers"]["x-forwarded-client-cert"]
        print(
            f"replicas: root {on_a['ca']['fingerprint_sha256'][:23]}… on both;"  # type: ignore[index]
            f" frontend's leaf from A, api's from B; 20/20 calls A -> B answered"
        )
