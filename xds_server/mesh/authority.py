"""``MeshAuthority``: keeps every mesh service's identity issued, fresh, and from one root.

Fed by the wiring: ``set_config`` on every config change (which services need an identity,
the trust domain, the TTL, the CA), ``run()`` as a task (renewals and rotation steps when
they are due). It publishes each new :class:`Identities` through ``on_identities`` and
reports issuance and rotation through ``on_event``; it never logs, shows or sends a key.

- **Renewal**: each leaf is re-issued at half its lifetime (a new key and serial).
- **Built-in root**: read from the vault; the first replica that needs one stores it with
  ``put_if_absent`` and a replica that loses that race uses the winner's.
- **Root rotation** (built-in ↔ provided, another provided CA, a new trust domain, or
  ``rotate_builtin_root()``), three steps, each published only after the previous one and
  ``rotation_pause`` apart so that every proxy has the bundle before it meets a certificate
  of the new root: (1) the new root joins the trust bundle, the old one still issues;
  (2) every leaf is re-issued from the new root, which comes first in the bundle; (3) the old
  root leaves the bundle.
- **Rotation state persisted**: before each step is published, the rotation (the bundle, the
  issuing root, the target, the next step) is written to the vault (``mesh/ca/rotation``), and
  only then a new built-in root replaces ``mesh/ca/builtin``. A server killed mid-rotation
  resumes it on start: the bundles hold both roots until the remaining steps are done, the next
  one no sooner than ``rotation_pause`` after the restart.
- **Operator rotation**: ``rotate_root()`` (``POST /v1/mesh/rotate-root``) starts a rotation of
  the built-in root, or says why it cannot (:class:`RootRotationRefused`).

Time comes from ``clock``; ``tick()`` does whatever is due at ``clock()`` (tests with a fake
clock call it directly) and ``run()`` sleeps until the next due time, or until ``set_config``
changes the plan.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from xds_server.mesh.ca import (
    MeshCaError,
    RootCa,
    ca_from_pem,
    ca_info,
    generate_root,
    issue_leaf,
    rfc3339,
)
from xds_server.mesh.vault import (
    BUILTIN_KEY,
    NO_ROTATION,
    ROTATION_KEY,
    RootVault,
    decode_root,
    decode_rotation,
    encode_root,
    encode_rotation,
    successor_key,
)
from xds_server.model.config import Config
from xds_server.model.mesh import CaProvider, MeshSpec, RootRotationRefused
from xds_server.model.workload import NO_IDENTITIES, Identities, WorkloadIdentity

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
EventHook = Callable[[str, Mapping[str, Any]], None]

DEFAULT_ROTATION_PAUSE: Final = timedelta(seconds=5)
#: After the vault (the config store) failed, it is tried again this much later.
VAULT_RETRY: Final = timedelta(seconds=5)
#: Leaves issued before yielding to the event loop (1,000 services must not stall ADS).
_BATCH: Final = 100
_MIN_RENEWAL: Final = timedelta(seconds=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


class MeshEvent(StrEnum):
    """The ``kind`` of ``on_event``; details are JSON values, never a key."""

    #: ``service, spiffe_id, serial, not_after, reason, ca``.
    IDENTITY_ISSUED = "identity_issued"
    #: ``service``: no longer needs an identity.
    IDENTITY_REMOVED = "identity_removed"
    #: ``ca`` (ca_info): the first root the mesh issues from.
    CA_READY = "ca_ready"
    #: ``step`` (trust|issue|retire), ``ca`` (the new root), ``previous`` (fingerprints).
    CA_ROTATION = "ca_rotation"
    #: ``error``: the configured CA cannot be used (the current root keeps issuing).
    CA_ERROR = "ca_error"


class Reason(StrEnum):
    NEW = "new"
    RENEWAL = "renewal"
    TRUST_DOMAIN = "trust_domain"
    TTL = "ttl"
    ROOT_ROTATION = "root_rotation"


@dataclass(frozen=True, slots=True)
class _Wanted:
    """What the config asks of the CA."""

    mesh: MeshSpec
    services: frozenset[str]

    @property
    def ttl(self) -> timedelta:
        return timedelta(milliseconds=self.mesh.certificate_ttl.milliseconds)


@dataclass(frozen=True, slots=True)
class _Leaf:
    identity: WorkloadIdentity
    root: str  # fingerprint of the issuing CA
    trust_domain: str
    due: datetime  # half its lifetime


@dataclass(frozen=True, slots=True)
class _Rotation:
    target: RootCa
    #: The next step: ``issue`` (2: leaves from the target) or ``retire`` (3: old roots out).
    step: str
    due: datetime


class MeshAuthority:
    """See the module docstring."""

    def __init__(
        self,
        vault: RootVault,
        on_identities: Callable[[Identities], None],
        clock: Clock = utc_now,
        *,
        on_event: EventHook | None = None,
        rotation_pause: timedelta = DEFAULT_ROTATION_PAUSE,
    ) -> None:
        self._vault = vault
        self._on_identities = on_identities
        self._clock = clock
        self._on_event = on_event
        self._pause = rotation_pause
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._wanted: _Wanted | None = None
        #: The CA issuing now, and the trust bundle (the issuing one first).
        self._active: RootCa | None = None
        self._trusted: list[RootCa] = []
        self._rotation: _Rotation | None = None
        self._leaves: dict[str, _Leaf] = {}
        self._identities = NO_IDENTITIES
        self._config = Config()
        #: When to try the vault again after it failed.
        self._retry: datetime | None = None
        #: Certificates issued since start (a metric).
        self.issued_total = 0
        #: Root rotations completed since start (a metric).
        self.rotations_total = 0
        #: Why the configured CA cannot be used (None: it is in use).
        self.last_error: str | None = None
        #: What the vault holds under ``ROTATION_KEY`` (None: not read yet since start).
        self._saved_rotation: str | None = None
        #: A new built-in root, stored under ``BUILTIN_KEY`` once the rotation is recorded.
        self._pending_builtin: str | None = None

    # --- reading ------------------------------------------------------------------------------

    @property
    def identities(self) -> Identities:
        return self._identities

    def seconds_to_nearest_expiry(self) -> float | None:
        """Seconds until the first identity expires (None: none issued); a metric."""
        if not self._leaves:
            return None
        nearest = min(leaf.identity.not_after for leaf in self._leaves.values())
        return (nearest - self._clock()).total_seconds()

    def next_due(self) -> datetime | None:
        """When ``tick()`` has something to do next (None: nothing scheduled)."""
        times = [leaf.due for leaf in self._leaves.values()]
        if self._rotation is not None:
            times.append(self._rotation.due)
        if self._retry is not None:
            times.append(self._retry)
        return min(times, default=None)

    def identity_status(self, service: str) -> dict[str, Any] | None:
        """What ``/v1/proxies/{id}`` shows of a service's identity (no key)."""
        leaf = self._leaves.get(service)
        if leaf is None:
            return None
        identity = leaf.identity
        return {
            "service": service,
            "spiffe_id": identity.spiffe_id,
            "serial": identity.serial,
            "not_before": rfc3339(identity.not_before),
            "not_after": rfc3339(identity.not_after),
            "renew_at": rfc3339(leaf.due),
            "ca_fingerprint_sha256": leaf.root,
        }

    def status(self) -> dict[str, Any]:
        """The CA, the trust bundle, a rotation in progress and every identity; no key."""
        rotation = self._rotation
        identities = [self.identity_status(s) for s in sorted(self._leaves)]
        return {
            "ca": ca_info(self._active) if self._active is not None else None,
            "trust_bundle": [ca_info(root) for root in self._trusted],
            "rotation": None
            if rotation is None
            else {
                "to": ca_info(rotation.target),
                "next_step": rotation.step,
                "due": rfc3339(rotation.due),
            },
            "error": self.last_error,
            "identities": identities,
            "identities_count": len(identities),
            "issued_total": self.issued_total,
            "rotations_total": self.rotations_total,
            "seconds_to_nearest_expiry": self.seconds_to_nearest_expiry(),
        }

    # --- config -------------------------------------------------------------------------------

    async def set_config(self, config: Config, extra_services: Iterable[str] = ()) -> None:
        """Take a new config: identities for every ``Sidecar`` service (and ``extra_services``,
        e.g. edge groups calling mesh services) while a ``Mesh`` is configured."""
        mesh = config.mesh_spec
        async with self._lock:
            if mesh is None:
                rotating = self._rotation is not None
                self._disable()
                if rotating:
                    await self._record()
                return
            self._config = config
            self._wanted = _Wanted(mesh, frozenset(config.sidecars) | frozenset(extra_services))
            await self._apply(self._clock())
        self._wake.set()

    async def _apply(self, now: datetime) -> None:
        """Bring the root and the leaves to what ``_wanted`` asks; publish what changed."""
        assert self._wanted is not None
        desired = await self._desired_root(self._config, self._wanted.mesh, now)
        if desired is not None:
            self._aim_at(desired, now)
        if self._active is not None:
            await self._reconcile(now)
        await self._record()
        self._publish()

    async def rotate_root(self) -> RootRotationRefused | None:
        """What ``POST /v1/mesh/rotate-root`` does: start rotating the built-in root (None),
        or say why not: no mesh, a provided CA, a rotation already under way, no root yet."""
        async with self._lock:
            wanted, rotation = self._wanted, self._rotation
            if wanted is None:
                return RootRotationRefused(
                    "no-mesh", "no Mesh document: there is no mesh CA root to rotate"
                )
            if wanted.mesh.ca.provider != CaProvider.BUILTIN:
                return RootRotationRefused(
                    "provided-ca",
                    "the mesh CA is provided (spec.ca.provider: provided): rotate it by naming"
                    " another Certificate in spec.ca.certificate",
                )
            if rotation is not None:
                return RootRotationRefused(
                    "rotation-in-progress",
                    f"a root rotation is already under way (to {rotation.target.fingerprint};"
                    f" next step {rotation.step!r} due {rfc3339(rotation.due)})",
                )
            if self._active is None:
                return RootRotationRefused(
                    "no-root", f"the mesh CA has no root yet: {self.last_error or 'not ready'}"
                )
            await self._rotate_builtin(wanted, self._active, self._clock())
        self._wake.set()
        return None

    async def rotate_builtin_root(self) -> None:
        """Replace the built-in root by a new one (a no-op unless the mesh uses it): every
        replica rotating the same root gets the same successor, and a replica that has not
        yet seen another one's rotation joins it instead of rotating again."""
        async with self._lock:
            wanted, target = self._wanted, self._target()
            if wanted is None or target is None or wanted.mesh.ca.provider != CaProvider.BUILTIN:
                return
            await self._rotate_builtin(wanted, target, self._clock())
        self._wake.set()

    async def _rotate_builtin(self, wanted: _Wanted, target: RootCa, now: datetime) -> None:
        trust_domain = wanted.mesh.trust_domain
        successor = await self._builtin_root(trust_domain, now)
        if successor.fingerprint == target.fingerprint:
            successor = await self._successor(target, trust_domain, now)
        self._aim_at(successor, now)
        await self._record()
        self._publish()

    def _disable(self) -> None:
        if self._wanted is None and not self._leaves:
            return
        for service in sorted(self._leaves):
            self._emit(MeshEvent.IDENTITY_REMOVED, {"service": service})
        self._wanted, self._active, self._trusted, self._rotation = None, None, [], None
        self._retry = None
        self._leaves = {}
        self._publish()

    async def _desired_root(self, config: Config, mesh: MeshSpec, now: datetime) -> RootCa | None:
        """The CA the config asks for (None, with ``last_error`` set, if it is unusable)."""
        self._retry = None
        try:
            if self._active is None and self._saved_rotation is None:
                await self._restore(now)
            if mesh.ca.provider == CaProvider.PROVIDED:
                root = _provided_root(config, mesh.ca.certificate or "", now)
            else:
                root = await self._builtin_root(mesh.trust_domain, now)
        except MeshCaError as error:
            self._failed(str(error))
            return None
        except Exception as error:  # the vault (the config store) failed: try again soon
            self._retry = now + VAULT_RETRY
            self._failed(f"the mesh CA root could not be read or stored: {error}")
            return None
        self.last_error = None
        return root

    def _failed(self, error: str) -> None:
        if error != self.last_error:
            log.error("mesh CA: %s (the current root, if any, keeps issuing)", error)
            self._emit(MeshEvent.CA_ERROR, {"error": error})
        self.last_error = error

    async def _builtin_root(self, trust_domain: str, now: datetime) -> RootCa:
        stored = await self._vault.get(BUILTIN_KEY)
        if stored is None:
            fresh = generate_root(trust_domain, now)
            stored = await self._vault.put_if_absent(BUILTIN_KEY, encode_root(fresh, trust_domain))
        root, made_for = decode_root(stored, BUILTIN_KEY)
        if made_for and made_for != trust_domain:
            root = await self._successor(root, trust_domain, now)
        return root

    async def _successor(self, root: RootCa, trust_domain: str, now: datetime) -> RootCa:
        key = successor_key(root, trust_domain)
        fresh = generate_root(trust_domain, now)
        stored = await self._vault.put_if_absent(key, encode_root(fresh, trust_domain))
        self._pending_builtin = stored  # under BUILTIN_KEY once the rotation is recorded
        return decode_root(stored, key)[0]

    # --- the rotation, persisted --------------------------------------------------------------

    async def _restore(self, now: datetime) -> None:
        """On start: resume the rotation a previous run (or another replica) left under way,
        with its bundle and its issuing root; the next step no sooner than the pause."""
        value = await self._vault.get(ROTATION_KEY)
        self._saved_rotation = value or NO_ROTATION
        stored = decode_rotation(value)
        if stored is None:
            return
        roots = {root.fingerprint: root for root in stored.trusted}
        self._active, self._trusted = roots[stored.active], list(stored.trusted)
        due = max(stored.due, now + self._pause)
        self._rotation = _Rotation(roots[stored.target], stored.step, due)
        log.info(
            "mesh CA: resuming the rotation to %s (next step %s, due %s)",
            stored.target,
            stored.step,
            rfc3339(due),
        )
        self._emit(MeshEvent.CA_READY, {"ca": ca_info(self._active)})

    async def _record(self) -> None:
        """Store the rotation state (before it is published), then a new built-in root (so a
        server killed in between still finds the rotation that trusts it). A store that
        fails is logged; the next change tries again."""
        rotation, active = self._rotation, self._active
        value = NO_ROTATION
        if rotation is not None and active is not None:
            value = encode_rotation(
                self._trusted, active, rotation.target, rotation.step, rotation.due
            )
        try:
            # Never read (the vault failed at start): keep what it holds for the restore.
            if value != (self._saved_rotation or NO_ROTATION):
                await self._vault.put(ROTATION_KEY, value)
                self._saved_rotation = value
            if self._pending_builtin is not None:
                await self._vault.put(BUILTIN_KEY, self._pending_builtin)
                self._pending_builtin = None
        except Exception as error:
            log.warning("mesh CA: the rotation state could not be stored: %s", error)

    def _target(self) -> RootCa | None:
        return self._rotation.target if self._rotation is not None else self._active

    def _aim_at(self, desired: RootCa, now: datetime) -> None:
        """Make ``desired`` the root to issue from: at once if there is none yet, else by a
        rotation whose first step (the new root joins the bundle) happens here."""
        if self._active is None:
            self._active, self._trusted = desired, [desired]
            log.info("mesh CA: issuing from %s (%s)", desired.subject, desired.fingerprint)
            self._emit(MeshEvent.CA_READY, {"ca": ca_info(desired)})
            return
        target = self._target()
        if target is not None and target.fingerprint == desired.fingerprint:
            return
        if desired.fingerprint == self._active.fingerprint:
            # Back to the root that still issues: no leaf of the other one exists yet; it
            # leaves the bundle after the pause (a proxy may already have met it).
            self._rotation = _Rotation(desired, "retire", now + self._pause)
            return
        if all(root.fingerprint != desired.fingerprint for root in self._trusted):
            self._trusted.append(desired)
        self._rotation = _Rotation(desired, "issue", now + self._pause)
        log.info(
            "mesh CA: rotating to %s (%s): step 1, trust", desired.subject, desired.fingerprint
        )
        self._emit(MeshEvent.CA_ROTATION, self._rotation_detail("trust", desired))

    def _rotation_detail(self, step: str, target: RootCa) -> dict[str, Any]:
        previous = [r.fingerprint for r in self._trusted if r.fingerprint != target.fingerprint]
        return {"step": step, "ca": ca_info(target), "previous": previous}

    # --- issuing ------------------------------------------------------------------------------

    async def _reconcile(self, now: datetime) -> None:
        """Issue what the wanted services lack (or hold for another trust domain, a longer
        TTL, an untrusted root); forget services no longer wanted."""
        wanted = self._wanted
        assert wanted is not None and self._active is not None
        for service in sorted(set(self._leaves) - wanted.services):
            del self._leaves[service]
            self._emit(MeshEvent.IDENTITY_REMOVED, {"service": service})
        trusted = {root.fingerprint for root in self._trusted}
        todo: list[tuple[str, Reason]] = []
        for service in sorted(wanted.services):
            leaf = self._leaves.get(service)
            if leaf is None:
                todo.append((service, Reason.NEW))
            elif leaf.trust_domain != wanted.mesh.trust_domain:
                todo.append((service, Reason.TRUST_DOMAIN))
            elif leaf.identity.not_after > now + wanted.ttl:
                todo.append((service, Reason.TTL))
            elif leaf.root not in trusted:
                todo.append((service, Reason.ROOT_ROTATION))
        await self._issue_all(todo, now)

    async def _issue_all(self, todo: list[tuple[str, Reason]], now: datetime) -> None:
        if len(todo) < _BATCH:
            for service, reason in todo:
                self._issue(service, now, reason)
            return
        # Many at once (the mesh turned on, a root rotation): no cyclic garbage collection
        # meanwhile. Each leaf is a handful of long-lived objects, and thousands of them
        # would trigger full collections that walk the whole heap (every stream, every
        # snapshot) for nothing; the collection that follows does it once.
        enabled = gc.isenabled()
        gc.disable()
        try:
            for count, (service, reason) in enumerate(todo, start=1):
                self._issue(service, now, reason)
                if count % _BATCH == 0:
                    await asyncio.sleep(0)  # let ADS streams run between batches
        finally:
            if enabled:
                gc.enable()

    def _issue(self, service: str, now: datetime, reason: Reason) -> None:
        wanted, ca = self._wanted, self._active
        assert wanted is not None and ca is not None
        identity = issue_leaf(ca, wanted.mesh.trust_domain, service, now, wanted.ttl)
        # Half its lifetime; at least a second, even from a CA about to expire (no hot loop).
        due = now + max((identity.not_after - now) / 2, _MIN_RENEWAL)
        self._leaves[service] = _Leaf(identity, ca.fingerprint, wanted.mesh.trust_domain, due)
        self.issued_total += 1
        log.debug(
            "mesh: issued %s serial %s until %s (%s)",
            identity.spiffe_id,
            identity.serial,
            rfc3339(identity.not_after),
            reason.value,
        )
        self._emit(
            MeshEvent.IDENTITY_ISSUED,
            {
                "service": service,
                "spiffe_id": identity.spiffe_id,
                "serial": identity.serial,
                "not_after": rfc3339(identity.not_after),
                "reason": reason.value,
                "ca": ca.fingerprint,
            },
        )

    # --- time ---------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Do what is due at ``clock()``: at most one rotation step, then every renewal; publish
        once if anything changed. Returns the number of leaves issued."""
        async with self._lock:
            if self._wanted is None:
                return 0
            now = self._clock()
            before = self.issued_total
            if self._retry is not None and self._retry <= now:
                await self._apply(now)
            if self._active is None:
                return self.issued_total - before
            stepped = await self._rotation_step(now)
            due = [
                (s, Reason.RENEWAL) for s, leaf in sorted(self._leaves.items()) if leaf.due <= now
            ]
            await self._issue_all(due, now)
            if stepped:
                await self._record()
            if stepped or due:
                self._publish()
            return self.issued_total - before

    async def _rotation_step(self, now: datetime) -> bool:
        rotation = self._rotation
        if rotation is None or rotation.due > now:
            return False
        target = rotation.target
        if rotation.step == "issue":
            self._active = target
            self._trusted = [
                target,
                *(r for r in self._trusted if r.fingerprint != target.fingerprint),
            ]
            log.info("mesh CA: rotating to %s: step 2, issue", target.fingerprint)
            self._emit(MeshEvent.CA_ROTATION, self._rotation_detail("issue", target))
            await self._issue_all([(s, Reason.ROOT_ROTATION) for s in sorted(self._leaves)], now)
            self._rotation = _Rotation(target, "retire", now + self._pause)
        else:
            log.info("mesh CA: rotating to %s: step 3, retire the old roots", target.fingerprint)
            self._emit(MeshEvent.CA_ROTATION, self._rotation_detail("retire", target))
            self._trusted = [target]
            self._rotation = None
            self.rotations_total += 1
        return True

    async def run(self) -> None:
        """Until cancelled: ``tick()``, then sleep until the next due time (or a new config)."""
        while True:
            await self.tick()
            due = self.next_due()
            self._wake.clear()
            timeout = None if due is None else max(0.0, (due - self._clock()).total_seconds())
            if timeout == 0.0:
                await asyncio.sleep(0)  # due already: still let others run
                continue
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # --- publishing ---------------------------------------------------------------------------

    def _publish(self) -> None:
        bundle: list[str] = []
        for root in self._trusted:
            if root.trust_anchor not in bundle:
                bundle.append(root.trust_anchor)
        identities = Identities(
            MappingProxyType({s: leaf.identity for s, leaf in sorted(self._leaves.items())}),
            tuple(bundle),
        )
        if identities == self._identities:
            return
        self._identities = identities
        self._on_identities(identities)

    def _emit(self, kind: MeshEvent, detail: Mapping[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(kind.value, detail)


def _provided_root(config: Config, name: str, now: datetime) -> RootCa:
    entry = config.certificates.get(name)
    if entry is None:
        raise MeshCaError(f"ca.certificate: Certificate {name!r} does not exist")
    spec = entry.spec
    if spec.certificate is None or spec.private_key is None:
        raise MeshCaError(
            f"ca.certificate: Certificate {name!r} must hold the CA inline (certificate and"
            " private_key): the server signs with the key"
        )
    root = ca_from_pem(spec.certificate, spec.private_key)
    if root.not_after <= now:
        raise MeshCaError(f"ca.certificate: the CA in Certificate {name!r} has expired")
    return root
