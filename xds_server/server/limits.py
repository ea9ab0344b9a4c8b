"""Bounds on what one stream may ask for, so a hostile client cannot exhaust the server."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Nonces this server issues are decimal counters; anything else is not ours.
NONCE_PATTERN = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True, slots=True)
class StreamLimits:
    #: Names one request may carry (subscribe + unsubscribe + initial versions), and names
    #: one stream may hold per type. Envoy fleets with 10k+ clusters exist; 100k is abuse.
    max_resource_names: int = 50_000
    #: Longest resource name accepted.
    max_name_length: int = 1024
    #: Longest NACK message kept (Envoy's messages can be long; the rest is cut).
    max_error_message: int = 4096
