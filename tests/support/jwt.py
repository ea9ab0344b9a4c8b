"""Sign JWTs (RS256, ES256) with ``cryptography`` and publish the keys as a JWKS."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int, size: int | None = None) -> str:
    length = size or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(length, "big"))


@dataclass
class SigningKey:
    """An RSA (RS256) or P-256 (ES256) key pair with a key id."""

    kid: str
    algorithm: str = "RS256"
    _key: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._key is None:
            self._key = (
                rsa.generate_private_key(public_exponent=65537, key_size=2048)
                if self.algorithm == "RS256"
                else ec.generate_private_key(ec.SECP256R1())
            )

    def jwk(self) -> dict[str, str]:
        public = self._key.public_key().public_numbers()
        if self.algorithm == "RS256":
            return {
                "kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                "n": _uint(public.n), "e": _uint(public.e),
            }  # fmt: skip
        return {
            "kty": "EC", "kid": self.kid, "alg": "ES256", "use": "sig", "crv": "P-256",
            "x": _uint(public.x, 32), "y": _uint(public.y, 32),
        }  # fmt: skip

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        header = {"alg": self.algorithm, "typ": "JWT", "kid": kid or self.kid}
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        ).encode()
        if self.algorithm == "RS256":
            signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(self._key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return signing_input.decode() + "." + b64url(signature)


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.jwk() for key in keys]}


def claims(issuer: str, audience: str, lifetime: float = 3600, **extra: Any) -> dict[str, Any]:
    """Standard claims valid from now for ``lifetime`` seconds (negative: already expired)."""
    now = int(time.time())
    return {
        "iss": issuer,
        "aud": audience,
        "iat": now - 10,
        "exp": now + int(lifetime),
        **extra,
    }
