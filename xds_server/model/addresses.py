"""IP literals as Envoy accepts them in socket addresses (no hostnames, no IPv6 zone ids)."""

from __future__ import annotations

import ipaddress
import re
from typing import Final

_OCTET: Final = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4: Final = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")


def is_ip_literal(address: str) -> bool:
    """Whether Envoy can use ``address`` as a socket address without resolving it."""
    if _IPV4.fullmatch(address):  # the common case, without ipaddress's cost
        return True
    if "%" in address:
        return False
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
