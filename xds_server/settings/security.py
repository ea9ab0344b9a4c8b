"""Security flags of ``xds-server serve`` (admin API tokens, TLS on the ADS port).

Each flag has an ``XDS_SERVER_*`` variable (the flag wins):

- ``--admin-tokens FILE`` (``XDS_SERVER_ADMIN_TOKENS``): bearer tokens of the admin API.
- ``--insecure-admin`` (``XDS_SERVER_INSECURE_ADMIN=1``): allow an admin API on a non-loopback
  address without tokens (otherwise the server refuses to start).
- ``--ads-tls-cert FILE``, ``--ads-tls-key FILE`` (``XDS_SERVER_ADS_TLS_CERT``/``_KEY``): TLS on
  the ADS port, PEM.
- ``--ads-client-ca FILE`` (``XDS_SERVER_ADS_CLIENT_CA``): Envoys must present a client
  certificate signed by this CA.
- ``--ads-verify-node [group|id|id+group]`` (``XDS_SERVER_ADS_VERIFY_NODE``): the node's group
  (the default), id, or both must be a SAN of its client certificate.

Parsed with the other serve flags (``serve``); nothing here reads a file: the wiring loads
the tokens and the certificates when the server starts. Errors are ``ValueError``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

VERIFY_MODES = ("group", "id", "id+group")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    admin_tokens: str | None = None
    insecure_admin: bool = False
    ads_tls_cert: str | None = None
    ads_tls_key: str | None = None
    ads_client_ca: str | None = None
    #: None: no check; else which of the node's names must be a SAN of its certificate.
    ads_verify_node: str | None = None

    def __post_init__(self) -> None:
        if bool(self.ads_tls_cert) != bool(self.ads_tls_key):
            raise ValueError("--ads-tls-cert and --ads-tls-key go together")
        if self.ads_client_ca and not self.ads_tls_cert:
            raise ValueError("--ads-client-ca needs TLS on the ADS port (--ads-tls-cert/-key)")
        if self.ads_verify_node is not None:
            if self.ads_verify_node not in VERIFY_MODES:
                raise ValueError(
                    f"--ads-verify-node: one of {', '.join(VERIFY_MODES)},"
                    f" not {self.ads_verify_node!r}"
                )
            if not self.ads_client_ca:
                raise ValueError("--ads-verify-node needs client certificates (--ads-client-ca)")

    @property
    def ads_tls(self) -> bool:
        return bool(self.ads_tls_cert)


def security_from(pick: Callable[[str], str | None]) -> SecuritySettings:
    """Settings from ``pick(flag)``: the flag's value, else its ``XDS_SERVER_*`` variable."""
    insecure = pick("insecure_admin")
    verify = pick("ads_verify_node")
    return SecuritySettings(
        admin_tokens=pick("admin_tokens") or None,
        insecure_admin=_bool("XDS_SERVER_INSECURE_ADMIN", insecure),
        ads_tls_cert=pick("ads_tls_cert") or None,
        ads_tls_key=pick("ads_tls_key") or None,
        ads_client_ca=pick("ads_client_ca") or None,
        ads_verify_node=None if verify is None or verify.lower() in _FALSE else verify.lower(),
    )


def _bool(name: str, value: object) -> bool:
    if value is None or value is False:
        return False
    if value is True:
        return True
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is not a boolean")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts local connections (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_admin_exposure(host: str, security: SecuritySettings) -> None:
    """Refuse an admin API reachable from other hosts without tokens, unless asked for."""
    if security.admin_tokens or security.insecure_admin or is_loopback(host):
        return
    raise ValueError(
        f"the admin API would listen on {host}, reachable from other hosts, without"
        " authentication: give --admin-tokens FILE (see docs/hardening.md), bind it to"
        " 127.0.0.1, or pass --insecure-admin if something in front of it authenticates"
    )


def ads_exposure_warning(host: str, security: SecuritySettings) -> str | None:
    """Why an ADS port reachable from other hosts without client certificates is risky, or
    ``None`` where it is not.

    Whoever reaches the ADS port may claim any ``node.cluster``, and so receive that proxy
    group's config, including a mesh sidecar's private key over SDS. Client certificates
    with ``--ads-verify-node`` bind a connection to the group it may claim.
    """
    if is_loopback(host) or (security.ads_client_ca and security.ads_verify_node):
        return None
    return (
        f"the ADS port listens on {host}, reachable from other hosts, without client"
        " certificates bound to node names: any client can claim any proxy group and receive"
        " its config, mesh identities (private keys) included; give --ads-tls-cert/-key,"
        " --ads-client-ca and --ads-verify-node (see docs/hardening.md and docs/mesh.md)"
    )
