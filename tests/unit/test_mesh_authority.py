"""``MeshAuthority``: issuing from one root (across replicas and restarts), renewal at
half-life with a fake clock, and root rotation in three published steps."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from tests.consul_double import ConsulDouble
from xds_server.consul import ConsulSettings
from xds_server.mesh import MemoryVault, MeshAuthority, StoreVault, generate_root
from xds_server.mesh.vault import BUILTIN_KEY, ROTATION_KEY
from xds_server.model.config import Config
from xds_server.model.workload import Identities
from xds_server.store import SqliteStore
from xds_server.store.consul_kv import ConsulKvSettings, ConsulKvStore

START = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
#: The bundles a rotation publishes, before and after: trust, issue, retire.
THREE_STEPS = [("old",), ("old", "new"), ("new", "old"), ("new",)]


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


class Recorder:
    """Every published ``Identities`` and every event, in order."""

    def __init__(self) -> None:
        self.published: list[Identities] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    def identities(self, identities: Identities) -> None:
        self.published.append(identities)
        self.changed.set()

    def event(self, kind: str, detail: Any) -> None:
        self.events.append((kind, dict(detail)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def authority(
    vault: Any, recorder: Recorder, clock: Any = None, pause: float = 0.0
) -> MeshAuthority:
    kw: dict[str, Any] = {"clock": clock} if clock is not None else {}
    return MeshAuthority(
        vault,
        recorder.identities,
        on_event=recorder.event,
        rotation_pause=dt.timedelta(seconds=pause),
        **kw,
    )


def config(
    services: tuple[str, ...] = ("api", "frontend"),
    *,
    ttl: str = "1h",
    trust_domain: str = "mesh.local",
    ca: dict[str, Any] | None = None,
    certificates: dict[str, dict[str, Any]] | None = None,
) -> Config:
    mesh: dict[str, Any] = {"certificate_ttl": ttl, "trust_domain": trust_domain}
    if ca is not None:
        mesh["ca"] = ca
    documents: list[tuple[str, str, dict[str, Any], int]] = [("Mesh", "mesh", mesh, 1)]
    for index, service in enumerate(services):
        spec = {"inbound": {"port": 20000 + index, "local_port": 8080}}
        documents.append(("Sidecar", service, spec, 2 + index))
    for name, spec in (certificates or {}).items():
        documents.append(("Certificate", name, spec, 100))
    return Config.from_documents(documents)


def provided(name: str = "corp-ca") -> tuple[dict[str, Any], dict[str, dict[str, Any]], str]:
    """A provided CA: the mesh's ``ca``, the ``Certificate`` holding it, its certificate."""
    root = generate_root("corp.example", START)
    spec = {"certificate": root.certificate, "private_key": root.private_key}
    return {"provider": "provided", "certificate": name}, {name: spec}, root.certificate


def load(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def issuer_of(chain_pem: str, bundle: tuple[str, ...], at: dt.datetime) -> int | None:
    """The index in ``bundle`` of the root the chain verifies against (None: none)."""
    leaf, *intermediates = load(chain_pem)
    for index, root_pem in enumerate(bundle):
        verifier = PolicyBuilder().store(Store(load(root_pem))).time(at).build_client_verifier()
        try:
            verifier.verify(leaf, intermediates)
        except x509.verification.VerificationError:
            continue
        return index
    return None


def bundle(ca: MeshAuthority) -> tuple[str, ...]:
    return ca.identities.trust_bundle


def assert_no_key(*values: Any) -> None:
    text = json.dumps(values, default=str)
    assert "PRIVATE KEY" not in text


async def test_identities_for_every_sidecar_service_from_one_root() -> None:
    recorder, clock = Recorder(), FakeClock()
    vault = MemoryVault()
    ca = authority(vault, recorder, clock)
    await ca.set_config(config(), extra_services=["edge"])
    identities = ca.identities
    assert recorder.published == [identities]
    assert sorted(identities.by_service) == ["api", "edge", "frontend"]
    assert len(identities.trust_bundle) == 1
    for service, identity in identities.by_service.items():
        assert identity.spiffe_id == f"spiffe://mesh.local/service/{service}"
        assert issuer_of(identity.certificate_chain, identities.trust_bundle, START) == 0
        assert identity.not_after == START + dt.timedelta(hours=1)
    stored = json.loads(vault.values[BUILTIN_KEY])
    assert stored["certificate"] == identities.trust_bundle[0]
    assert stored["trust_domain"] == "mesh.local"
    status = ca.status()
    assert status["ca"]["provider"] == "builtin"
    api = status["identities"][0]
    assert api["service"] == "api" and api["spiffe_id"] == "spiffe://mesh.local/service/api"
    assert api["serial"] == identities.by_service["api"].serial
    assert api["not_after"] == "2026-05-01T13:00:00Z"
    assert [i["service"] for i in status["identities"]] == ["api", "edge", "frontend"]
    assert ca.identity_status("api") == api and ca.identity_status("nope") is None
    assert status["identities_count"] == 3 and status["issued_total"] == ca.issued_total == 3
    assert ca.seconds_to_nearest_expiry() == 3600.0
    assert recorder.kinds() == ["ca_ready"] + ["identity_issued"] * 3
    assert_no_key(status, recorder.events)
    # The same config again issues nothing and publishes nothing.
    await ca.set_config(config(), extra_services=["edge"])
    assert len(recorder.published) == 1 and ca.issued_total == 3
    # A service that goes away loses its identity; without a mesh, nobody has one.
    await ca.set_config(config(("api",)))
    assert sorted(ca.identities.by_service) == ["api"]
    assert ("identity_removed", {"service": "frontend"}) in recorder.events
    await ca.set_config(Config())
    assert ca.identities == Identities()
    assert ca.status()["ca"] is None and ca.seconds_to_nearest_expiry() is None


async def test_each_leaf_is_renewed_at_half_its_lifetime() -> None:
    recorder, clock = Recorder(), FakeClock()
    ca = authority(MemoryVault(), recorder, clock)
    await ca.set_config(config(("api",), ttl="1m"))
    first = ca.identities.by_service["api"]
    assert ca.next_due() == START + dt.timedelta(seconds=30)
    clock.advance(seconds=29)
    assert await ca.tick() == 0
    assert ca.identities.by_service["api"] == first and len(recorder.published) == 1
    serials = [first.serial]
    for rotation in range(3):
        clock.advance(seconds=1 if rotation == 0 else 30)
        assert await ca.tick() == 1
        renewed = ca.identities.by_service["api"]
        assert renewed.serial not in serials and renewed.private_key != first.private_key
        assert renewed.not_after == clock.now + dt.timedelta(minutes=1)
        assert issuer_of(renewed.certificate_chain, ca.identities.trust_bundle, clock.now) == 0
        serials.append(renewed.serial)
        assert ca.next_due() == clock.now + dt.timedelta(seconds=30)
    assert len(recorder.published) == 4
    assert [d["reason"] for k, d in recorder.events if k == "identity_issued"] == [
        "new",
        "renewal",
        "renewal",
        "renewal",
    ]
    # A shorter TTL re-issues at once.
    await ca.set_config(config(("api",), ttl="1m"))
    assert ca.issued_total == 4
    clock.advance(seconds=1)
    await ca.set_config(config(("api",), ttl="1m", trust_domain="other.local"))
    assert ca.identities.by_service["api"].spiffe_id == "spiffe://other.local/service/api"


async def test_run_sleeps_until_the_next_renewal() -> None:
    recorder = Recorder()
    ca = authority(MemoryVault(), recorder)  # the real clock
    await ca.set_config(config(("api",), ttl="1m"))
    task = asyncio.create_task(ca.run())
    try:
        recorder.changed.clear()
        await asyncio.sleep(0.2)
        assert not recorder.changed.is_set()  # nothing is due for 30 s: no busy loop
        assert ca.issued_total == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def check_rotation(
    published: list[Identities], old: str, new: str, at: dt.datetime
) -> list[tuple[str, ...]]:
    """The steps a rotation from root ``old`` to ``new`` published, checking that no leaf of
    ``new`` appears before every bundle holds it, and ``old`` leaves only after."""
    steps = []
    for identities in published:
        bundle = identities.trust_bundle
        for identity in identities.by_service.values():
            assert issuer_of(identity.certificate_chain, bundle, at) == 0  # issuing root first
        steps.append(tuple("old" if pem == old else "new" if pem == new else "?" for pem in bundle))
    return steps


async def start_rotation() -> tuple[MeshAuthority, Recorder, FakeClock, str, str]:
    """An authority on the built-in root, just told to switch to a provided CA (5 s pause)."""
    recorder, clock = Recorder(), FakeClock()
    ca = authority(MemoryVault(), recorder, clock, pause=5)
    await ca.set_config(config())
    old = ca.identities.trust_bundle[0]
    mesh_ca, certificates, new = provided()
    await ca.set_config(config(ca=mesh_ca, certificates=certificates))
    return ca, recorder, clock, old, new


async def test_switching_to_a_provided_ca_is_three_published_steps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="xds_server.mesh")
    ca, recorder, clock, old, new = await start_rotation()
    # Step 1: the new root is trusted; the old one still issues every leaf.
    assert bundle(ca) == (old, new)
    assert ca.status()["rotation"]["next_step"] == "issue"
    clock.advance(seconds=4)
    await ca.tick()
    assert bundle(ca) == (old, new)  # the pause is not over
    clock.advance(seconds=1)
    await ca.tick()  # step 2: every leaf from the new root, which comes first
    assert bundle(ca) == (new, old)
    clock.advance(seconds=5)
    await ca.tick()  # step 3: the old root leaves
    assert bundle(ca) == (new,)
    assert check_rotation(recorder.published, old, new, clock.now) == THREE_STEPS
    assert ca.status()["ca"]["provider"] == "provided" and ca.status()["rotation"] is None
    assert ca.rotations_total == 1
    steps = [d["step"] for k, d in recorder.events if k == "ca_rotation"]
    assert steps == ["trust", "issue", "retire"]
    assert_no_key(ca.status(), recorder.events)
    assert "issued spiffe://mesh.local/service/api" in caplog.text
    assert "PRIVATE KEY" not in caplog.text


async def test_rotation_steps_are_published_in_order_by_run() -> None:
    recorder = Recorder()
    ca = authority(MemoryVault(), recorder, pause=0)
    await ca.set_config(config())
    old = ca.identities.trust_bundle[0]
    task = asyncio.create_task(ca.run())
    try:
        mesh_ca, certificates, new = provided()
        await ca.set_config(config(ca=mesh_ca, certificates=certificates))
        async with asyncio.timeout(5):
            while ca.identities.trust_bundle != (new,):
                recorder.changed.clear()
                await recorder.changed.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    now = dt.datetime.now(dt.UTC)
    assert check_rotation(recorder.published, old, new, now) == THREE_STEPS


async def test_an_unusable_provided_ca_leaves_the_current_root_issuing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder, clock = Recorder(), FakeClock()
    ca = authority(MemoryVault(), recorder, clock)
    await ca.set_config(config())
    before = ca.identities
    caplog.set_level(logging.DEBUG, logger="xds_server.mesh")
    leaf = before.by_service["api"]  # a valid key pair, but not a CA
    spec = {"certificate": leaf.certificate_chain, "private_key": leaf.private_key}
    mesh_ca = {"provider": "provided", "certificate": "not-a-ca"}
    await ca.set_config(config(ca=mesh_ca, certificates={"not-a-ca": spec}))
    assert ca.identities == before
    assert "not a CA certificate" in (ca.status()["error"] or "")
    assert recorder.kinds()[-1] == "ca_error"
    await ca.set_config(config(ca={"provider": "provided", "certificate": "missing"}))
    assert "'missing' does not exist" in ca.status()["error"]
    assert "PRIVATE KEY" not in caplog.text
    # Fixed: back to normal, no rotation (it is the same root).
    await ca.set_config(config())
    assert ca.status()["error"] is None and ca.identities == before


async def test_a_rotation_can_be_reverted_before_it_issues() -> None:
    ca, recorder, clock, old, new = await start_rotation()
    serial = ca.identities.by_service["api"].serial
    await ca.set_config(config())  # back to the built-in root, which never stopped issuing
    clock.advance(seconds=5)
    await ca.tick()
    assert bundle(ca) == (old,)
    assert ca.identities.by_service["api"].serial == serial
    assert check_rotation(recorder.published, old, new, clock.now) == [
        ("old",),
        ("old", "new"),
        ("old",),
    ]


async def test_a_new_trust_domain_rotates_the_builtin_root_on_every_replica() -> None:
    vault = MemoryVault()
    one, two = Recorder(), Recorder()
    a, b = authority(vault, one, FakeClock()), authority(vault, two, FakeClock())
    await asyncio.gather(a.set_config(config()), b.set_config(config()))
    old = a.identities.trust_bundle
    assert b.identities.trust_bundle == old
    await asyncio.gather(
        a.set_config(config(trust_domain="prod.example")),
        b.set_config(config(trust_domain="prod.example")),
    )
    for ca in (a, b):
        await ca.tick()
        await ca.tick()
    assert a.identities.trust_bundle == b.identities.trust_bundle != old
    assert json.loads(vault.values[BUILTIN_KEY])["trust_domain"] == "prod.example"
    # An explicit rotation: the replicas agree on the successor too.
    await asyncio.gather(a.rotate_builtin_root(), b.rotate_builtin_root())
    for ca in (a, b):
        await ca.tick()
        await ca.tick()
    assert a.identities.trust_bundle == b.identities.trust_bundle
    assert len(a.identities.trust_bundle) == 1
    assert a.rotations_total == b.rotations_total == 2


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble(jitter=False) as started:
        yield started


@pytest.fixture
async def consul_replicas(double: ConsulDouble) -> AsyncIterator[list[ConsulKvStore]]:
    consul = ConsulSettings.from_env({}, address=double.url, request_timeout=2.0, wait=10.0)
    stores = [ConsulKvStore("xds/config", ConsulKvSettings(consul)) for _ in range(2)]
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


async def test_two_replicas_on_consul_kv_issue_from_the_same_root(
    double: ConsulDouble, consul_replicas: list[ConsulKvStore]
) -> None:
    one, two = Recorder(), Recorder()
    a = authority(StoreVault(consul_replicas[0]), one)
    b = authority(StoreVault(consul_replicas[1]), two)
    await asyncio.gather(a.set_config(config()), b.set_config(config()))
    assert a.identities.trust_bundle == b.identities.trust_bundle
    assert a.status()["ca"] == b.status()["ca"]
    stored = json.loads(double.kv_get(f"xds/config/secrets/{BUILTIN_KEY}") or b"{}")
    assert stored["certificate"] == a.identities.trust_bundle[0]
    # A leaf of replica B verifies against replica A's bundle.
    leaf = b.identities.by_service["api"]
    now = dt.datetime.now(dt.UTC)
    assert issuer_of(leaf.certificate_chain, a.identities.trust_bundle, now) == 0
    assert consul_replicas[0].current().revision == 0  # the root is no config revision


async def test_a_restart_on_the_same_sqlite_file_keeps_the_root(tmp_path: Path) -> None:
    path = tmp_path / "config.db"
    async with SqliteStore(path) as store:
        first = authority(StoreVault(store), Recorder())
        await first.set_config(config())
        root = first.identities.trust_bundle
        assert await store.history() == []
    async with SqliteStore(path) as store:
        again = authority(StoreVault(store), Recorder())
        await again.set_config(config())
        assert again.identities.trust_bundle == root
        assert again.status()["ca"] == first.status()["ca"]
        leaf = again.identities.by_service["api"]
        assert issuer_of(leaf.certificate_chain, root, dt.datetime.now(dt.UTC)) == 0


class FlakyVault(MemoryVault):
    """A vault whose store cannot be reached while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def get(self, key: str) -> str | None:
        if self.down:
            raise ConnectionError("cannot reach Consul at 127.0.0.1:8500")
        return await super().get(key)


async def test_a_vault_that_cannot_be_reached_is_tried_again() -> None:
    recorder, clock = Recorder(), FakeClock()
    vault = FlakyVault()
    ca = authority(vault, recorder, clock)
    await ca.set_config(config())
    assert ca.identities == Identities() and recorder.published == []
    assert "could not be read or stored: cannot reach Consul" in (ca.status()["error"] or "")
    assert recorder.kinds() == ["ca_error"]
    assert ca.next_due() == START + dt.timedelta(seconds=5)
    vault.down = False
    clock.advance(seconds=5)
    assert await ca.tick() == 2
    assert sorted(ca.identities.by_service) == ["api", "frontend"]
    assert ca.status()["error"] is None and ca.next_due() == clock.now + dt.timedelta(minutes=30)
    # Down again: the current root keeps issuing (renewals go on).
    vault.down = True
    await ca.set_config(config(("api", "frontend", "web")))
    assert sorted(ca.identities.by_service) == ["api", "frontend", "web"]


async def test_a_replica_behind_joins_a_rotation_instead_of_undoing_it() -> None:
    vault = MemoryVault()
    a, b = authority(vault, Recorder(), FakeClock()), authority(vault, Recorder(), FakeClock())
    await a.set_config(config())
    await b.set_config(config())
    await a.rotate_builtin_root()
    await a.rotate_builtin_root()  # twice on A while B saw neither
    newest = vault.values[BUILTIN_KEY]
    await b.rotate_builtin_root()
    assert vault.values[BUILTIN_KEY] == newest
    for ca in (a, b):
        await ca.tick()
        await ca.tick()
    assert bundle(a) == bundle(b) == (json.loads(newest)["certificate"],)


# -- the operator's rotation (POST /v1/mesh/rotate-root) and its state across restarts ---------


async def test_rotate_root_starts_a_builtin_rotation_or_says_why_not() -> None:
    recorder, clock = Recorder(), FakeClock()
    ca = authority(MemoryVault(), recorder, clock, pause=5)
    refused = await ca.rotate_root()
    assert refused is not None and refused.code == "no-mesh"
    await ca.set_config(config())
    old = bundle(ca)[0]
    assert await ca.rotate_root() is None
    assert len(bundle(ca)) == 2 and bundle(ca)[0] == old  # step 1: trusted, old still issues
    status = ca.status()
    assert status["rotation"]["next_step"] == "issue"
    assert status["trust_bundle"][0]["fingerprint_sha256"] == status["ca"]["fingerprint_sha256"]
    again = await ca.rotate_root()
    assert again is not None and again.code == "rotation-in-progress"
    assert "next step 'issue'" in again.reason
    new = bundle(ca)[1]
    for _ in range(2):
        clock.advance(seconds=5)
        await ca.tick()
    assert check_rotation(recorder.published, old, new, clock.now) == THREE_STEPS
    assert await ca.rotate_root() is None  # done: another rotation may start
    mesh_ca, certificates, _ = provided()
    provided_ca = authority(MemoryVault(), Recorder(), clock)
    await provided_ca.set_config(config(ca=mesh_ca, certificates=certificates))
    refused = await provided_ca.rotate_root()
    assert refused is not None and refused.code == "provided-ca"
    assert "spec.ca.certificate" in refused.reason


async def test_a_rotation_survives_a_restart_at_each_step() -> None:
    """A second authority on the same vault (the server after kill -9) resumes the rotation:
    both roots in the bundle until the remaining steps are done, no sooner than the pause."""
    vault, clock = MemoryVault(), FakeClock()
    first = authority(vault, Recorder(), clock, pause=5)
    await first.set_config(config())
    old = bundle(first)[0]
    await first.rotate_root()
    new = bundle(first)[1]
    stored = json.loads(vault.values[ROTATION_KEY])
    assert stored["step"] == "issue"
    assert json.loads(vault.values[BUILTIN_KEY])["certificate"] == new  # after the record

    # Killed after step 1: the restarted one trusts both, the old root still issuing.
    clock.advance(seconds=10)  # the step was due while it was down
    recorder = Recorder()
    second = authority(vault, recorder, clock, pause=5)
    await second.set_config(config())
    assert bundle(second) == (old, new)
    assert second.status()["rotation"]["next_step"] == "issue"
    assert second.next_due() == clock.now + dt.timedelta(seconds=5)  # proxies get it first
    await second.tick()
    assert bundle(second) == (old, new)
    clock.advance(seconds=5)
    await second.tick()  # step 2
    assert bundle(second) == (new, old)
    assert json.loads(vault.values[ROTATION_KEY])["step"] == "retire"

    # Killed after step 2: the restarted one issues from the new root, still trusting both.
    third_recorder = Recorder()
    third = authority(vault, third_recorder, clock, pause=5)
    await third.set_config(config())
    assert bundle(third) == (new, old)
    assert all(
        issuer_of(i.certificate_chain, (new,), clock.now) == 0
        for i in third.identities.by_service.values()
    )
    clock.advance(seconds=5)
    await third.tick()  # step 3
    assert bundle(third) == (new,)
    assert vault.values[ROTATION_KEY] == ""
    assert third.status()["rotation"] is None
    steps = check_rotation([*recorder.published, *third_recorder.published], old, new, clock.now)
    assert steps == [("old", "new"), ("new", "old"), ("new", "old"), ("new",)]

    # And a restart after it ended starts from the new root alone.
    fourth = authority(vault, Recorder(), clock, pause=5)
    await fourth.set_config(config())
    assert bundle(fourth) == (new,) and fourth.status()["rotation"] is None
    assert_no_key(fourth.status())


async def test_a_switch_to_a_provided_ca_survives_a_restart_too() -> None:
    vault, clock = MemoryVault(), FakeClock()
    first = authority(vault, Recorder(), clock, pause=5)
    await first.set_config(config())
    old = bundle(first)[0]
    mesh_ca, certificates, new = provided()
    await first.set_config(config(ca=mesh_ca, certificates=certificates))
    assert bundle(first) == (old, new)
    second = authority(vault, Recorder(), clock, pause=5)
    await second.set_config(config(ca=mesh_ca, certificates=certificates))
    assert bundle(second) == (old, new)
    for _ in range(2):
        clock.advance(seconds=5)
        await second.tick()
    assert bundle(second) == (new,) and vault.values[ROTATION_KEY] == ""


async def test_a_vault_failing_at_start_keeps_the_stored_rotation() -> None:
    vault, clock = FlakyVault(), FakeClock()
    vault.down = False
    first = authority(vault, Recorder(), clock, pause=5)
    await first.set_config(config())
    await first.rotate_root()
    both = bundle(first)
    vault.down = True
    second = authority(vault, Recorder(), clock, pause=5)
    await second.set_config(config())  # cannot read: nothing issued, nothing overwritten
    assert json.loads(vault.values[ROTATION_KEY])["step"] == "issue"
    vault.down = False
    clock.advance(seconds=5)
    await second.tick()
    assert bundle(second) == both
