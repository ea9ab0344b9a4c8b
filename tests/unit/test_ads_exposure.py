"""The start-up warning for an ADS port other hosts can reach without node-bound client
certificates (anyone could claim a proxy group, and a mesh sidecar's key with it)."""

from __future__ import annotations

import pytest

from xds_server.settings import SecuritySettings, ads_exposure_warning

MTLS = SecuritySettings(
    ads_tls_cert="/c.pem", ads_tls_key="/k.pem", ads_client_ca="/ca.pem", ads_verify_node="group"
)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_no_warning_on_loopback(host: str) -> None:
    assert ads_exposure_warning(host, SecuritySettings()) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "ads.example.com"])
def test_a_reachable_ads_port_without_node_bound_certificates_is_warned_about(host: str) -> None:
    warning = ads_exposure_warning(host, SecuritySettings())
    assert warning is not None and host in warning and "--ads-verify-node" in warning
    tls_only = SecuritySettings(ads_tls_cert="/c.pem", ads_tls_key="/k.pem")
    assert ads_exposure_warning(host, tls_only) is not None  # TLS alone binds no node


def test_client_certificates_bound_to_the_node_silence_it() -> None:
    assert ads_exposure_warning("0.0.0.0", MTLS) is None
