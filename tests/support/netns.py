"""Test hosts: Linux network namespaces on one machine, so each mesh instance has its own ports.

Two instances of a service each run an application and an Envoy sidecar that bind the same
ports (the ``Sidecar``'s one inbound port, the application's local port, the upstreams' local
ports on 127.0.0.1). On one host they would collide; in a namespace each has its own loopback
and its own port space, as on separate machines.

A ``Network`` is one bridge in the root namespace with ``10.213.N.1/24`` (``root_address``:
bind the control plane and the Consul double there); each ``TestHost`` is a namespace with
``lo`` up and one veth pair to the bridge, ``eth0`` inside with ``10.213.N.K/24``. Hosts of a
network reach each other and the root namespace over the bridge (layer 2: no forwarding, no
route to anywhere else is added, and addresses exist only on the interfaces made here).
``N`` is the first octet free on this machine, taken under a file lock, so concurrent test
runs get distinct subnets; names carry the test run's pid, and a later run removes what a
killed run left behind.

Needs root and ``ip netns`` (iproute2); ``available()`` says whether they work, ``require()``
skips a test with the reason when they do not.

Teardown (also when the test failed) kills every process in the namespace, deletes the veth,
the namespace and the bridge.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from tests.support.envoy import Envoy
from xds_server.cli.bootstrap import HostPort, bootstrap, sidecar_node

#: Subnets 10.213.N.0/24, N from 1 to 254, one per ``Network``.
PREFIX = "10.213"
#: Namespace names: ``xdsh-<pid>-<N>-<K>``; the pid tells a live run's from a dead one's.
NAMESPACE_PREFIX = "xdsh-"
_BRIDGE_ALIAS = "xds-server test network pid="
_LOCK = Path("/tmp/xds-server-netns.lock")
_STOP_GRACE = 5.0
#: A sidecar's admin port (the same in every host: each has its own ports).
SIDECAR_ADMIN_PORT = 19000


class NetnsError(RuntimeError):
    """An ``ip`` command failed (the message has its stderr)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = _ip("-j", *args).stdout.strip()
    return list(json.loads(out)) if out else []


@functools.cache
def unavailable_reason() -> str | None:
    """Why test hosts cannot be made here, or ``None`` when they can (probed once)."""
    if os.geteuid() != 0:
        return "test hosts need root (network namespaces)"
    if shutil.which("ip") is None:
        return "test hosts need the ip command (apt-get install iproute2)"
    probe = f"{NAMESPACE_PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
    except NetnsError as error:
        return f"ip netns does not work here: {error}"
    try:
        _ip("netns", "exec", probe, "ip", "link", "set", "lo", "up")
    except NetnsError as error:
        return f"ip netns exec does not work here: {error}"
    finally:
        _ip("netns", "delete", probe, check=False)
    return None


def available() -> bool:
    return unavailable_reason() is None


def require() -> None:
    """Skip the calling test, saying why, where test hosts cannot be made."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def namespaces() -> list[str]:
    """Every network namespace ``ip netns list`` knows (any owner)."""
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str, prefix: str) -> int | None:
    """The pid in ``<prefix><pid>-…``, if ``name`` is one of ours."""
    if not name.startswith(prefix):
        return None
    pid = name[len(prefix) :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _kill_all(namespace: str) -> None:
    """SIGTERM every process in ``namespace``, SIGKILL what is left after a grace period.

    ``ip netns pids`` finds them all, not only those ``TestHost.popen`` started (a process a
    test started with ``exec_prefix`` and forgot still holds the namespace alive)."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        pids = _pids(namespace)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + _STOP_GRACE
        while pids and time.monotonic() < deadline:
            _reap(pids)
            pids = [pid for pid in pids if _alive(pid)]
            if pids:
                time.sleep(0.05)  # a process's exit cannot be awaited unless it is our child
        if not pids:
            return


def _pids(namespace: str) -> list[int]:
    done = _ip("netns", "pids", namespace, check=False)
    return [int(pid) for pid in done.stdout.split() if pid.isdigit()]


def _reap(pids: Sequence[int]) -> None:
    """Collect the exit status of those that are our children (else they stay zombies)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def remove_stale() -> None:
    """Delete namespaces and bridges left by test runs whose process is gone (kill -9)."""
    for name in namespaces():
        pid = _owner(name, NAMESPACE_PREFIX)
        if pid is not None and not _alive(pid):
            _kill_all(name)
            _ip("netns", "delete", name, check=False)
    for link in _ip_json("link", "show", "type", "bridge"):
        pid = _owner(str(link.get("ifalias", "")), _BRIDGE_ALIAS)
        if pid is not None and not _alive(pid):
            _ip("link", "delete", str(link["ifname"]), check=False)


def _used_octets() -> set[int]:
    """The N of every 10.213.N.0/24 that is taken: an address in it on an interface of the
    root namespace (another run's bridge), or a route (other than the default one) that
    covers any of it, so that no network the machine reaches is shadowed."""
    used: set[int] = set()
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            parts = str(info.get("local", "")).split(".")
            if len(parts) == 4 and ".".join(parts[:2]) == PREFIX:
                used.add(int(parts[2]))
    routed = [
        ipaddress.ip_network(str(route["dst"]), strict=False)
        for route in _ip_json("-4", "route", "show", "table", "all")
        if route.get("dst") not in (None, "default")
    ]
    for octet in range(1, 255):
        subnet = ipaddress.ip_network(f"{PREFIX}.{octet}.0/24")
        if any(subnet.overlaps(network) for network in routed):
            used.add(octet)
    return used


class TestHost:
    """One namespace with ``lo`` up and ``eth0`` at ``address`` on its network's bridge.

    ``run`` and ``popen`` run a command inside (``ip netns exec``, which execs it: the
    ``Popen``'s pid is the command's). Bind inside to ``127.0.0.1`` (private to the host),
    ``address`` or ``0.0.0.0`` (reachable from the root namespace and the other hosts); any
    port is free in a fresh namespace, so the same fixed ports can serve every host.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, network: Network, index: int) -> None:
        self.network = network
        self.index = index
        self.name = f"{NAMESPACE_PREFIX}{os.getpid()}-{network.octet}-{index}"
        self.address = f"{network.subnet}.{index + 1}"
        #: The root side of the veth pair (an interface name has at most 15 characters).
        self.veth = f"xv{network.octet}h{index}"
        self._processes: list[subprocess.Popen[Any]] = []
        self._envoys: list[Envoy] = []
        self._created = False

    @property
    def root_address(self) -> str:
        """Where this host reaches the root namespace (the control plane, Consul)."""
        return self.network.root_address

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        """Put before a command line to run it in this host."""
        return ("ip", "netns", "exec", self.name)

    def create(self) -> TestHost:
        _ip("netns", "add", self.name)
        self._created = True
        inside = ("netns", "exec", self.name, "ip")
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        _ip("link", "set", self.veth, "master", self.network.bridge)
        _ip("link", "set", self.veth, "up")
        _ip(*inside, "addr", "add", f"{self.address}/24", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "link", "set", "lo", "up")
        return self

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside to completion; output captured as text."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(
            [*self.exec_prefix, *argv], check=check, timeout=timeout, text=True, **kwargs
        )

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``argv`` inside (text mode); teardown stops it if the test did not."""
        kwargs.setdefault("text", True)
        process: subprocess.Popen[str] = subprocess.Popen([*self.exec_prefix, *argv], **kwargs)
        self._processes.append(process)
        return process

    def envoy(self, config: dict[str, Any]) -> Envoy:
        """A ``tests.support.envoy.Envoy`` that runs in this host (not started yet).

        Its admin must listen on ``address`` (or ``0.0.0.0``) for the test, in the root
        namespace, to read it: ``127.0.0.1`` here is this host's own loopback."""
        envoy = Envoy(config, prefix=self.exec_prefix)
        self._envoys.append(envoy)
        return envoy

    def sidecar(
        self,
        service: str,
        node_id: str,
        ads_port: int,
        *,
        group: str | None = None,
        admin_port: int = SIDECAR_ADMIN_PORT,
        delta: bool = False,
    ) -> Envoy:
        """A sidecar of ``service`` in this host (not started): the bootstrap ``xds-server
        bootstrap --sidecar SERVICE`` prints, with ADS to ``root_address:ads_port`` (the
        control plane in the root namespace) and the admin on ``address:admin_port``."""
        node, cluster = sidecar_node(service, group=group, node_id=node_id)
        config = bootstrap(
            node,
            cluster,
            ads=HostPort(self.root_address, ads_port),
            delta=delta,
            admin=HostPort(self.address, admin_port),
        )
        return self.envoy(config)

    def close(self) -> None:
        """Stop every process inside, delete the veth and the namespace."""
        for envoy in self._envoys:
            envoy.stop()  # also removes its directory
        self._envoys.clear()
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self._processes.clear()
        if not self._created:
            return
        _kill_all(self.name)
        # Deleting the root side removes both ends at once (a namespace's deletion would
        # remove its end only later, asynchronously).
        _ip("link", "delete", self.veth, check=False)
        _ip("netns", "delete", self.name, check=False)
        self._created = False

    def __repr__(self) -> str:
        return f"TestHost({self.name}, {self.address})"


class Network:
    """A bridge in the root namespace at ``root_address`` (10.213.N.1/24) and its hosts."""

    def __init__(self) -> None:
        self.octet = 0
        self.subnet = ""
        self.root_address = ""
        self.bridge = ""
        self.hosts: list[TestHost] = []
        self._created = False

    def create(self) -> Network:
        """Take a free subnet and make the bridge (under a lock shared by every test run)."""
        require()
        with _LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            remove_stale()
            free = sorted(set(range(1, 255)) - _used_octets())
            if not free:
                raise NetnsError(f"no free subnet left in {PREFIX}.0.0/16")
            self.octet = free[0]
            self.subnet = f"{PREFIX}.{self.octet}"
            self.root_address = f"{self.subnet}.1"
            self.bridge = f"xb{self.octet}"
            _ip("link", "add", self.bridge, "type", "bridge")
            self._created = True
            _ip("link", "set", self.bridge, "alias", f"{_BRIDGE_ALIAS}{os.getpid()}")
            # The address marks the subnet taken for every other run (see ``_used_octets``).
            _ip("addr", "add", f"{self.root_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        return self

    def add_host(self) -> TestHost:
        if len(self.hosts) >= 250:
            raise NetnsError("a test network has at most 250 hosts")
        host = TestHost(self, len(self.hosts) + 1)
        self.hosts.append(host)
        return host.create()

    def close(self) -> None:
        """Tear down every host, then the bridge, even when a host's teardown fails."""
        try:
            with contextlib.ExitStack() as stack:
                for host in self.hosts:
                    stack.callback(host.close)  # run in reverse order, each whatever happens
        finally:
            if self._created:
                _ip("link", "delete", self.bridge, check=False)
                self._created = False

    def __enter__(self) -> Network:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def network(count: int = 0) -> Iterator[Network]:
    """A ``Network`` with ``count`` hosts (more with ``add_host``), torn down on exit."""
    net = Network()
    try:
        net.create()
        for _ in range(count):
            net.add_host()
        yield net
    finally:
        net.close()


@contextlib.contextmanager
def hosts(count: int) -> Iterator[list[TestHost]]:
    """``count`` hosts on one new network; ``hosts[i].root_address`` is the root side."""
    with network(count) as net:
        yield list(net.hosts)
