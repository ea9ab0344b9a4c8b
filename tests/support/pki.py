"""Test certificates, made when a test runs (nothing is checked in): CAs, key pairs, and the
``Certificate`` documents that carry them."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

RSA = trustme.KeyType.RSA
ECDSA = trustme.KeyType.ECDSA
_BODY_LINE = re.compile(r"^[A-Za-z0-9+/=]{40,}$")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class KeyPair:
    chain: str  # PEM, leaf first
    key: str  # PEM

    def document(self, name: str, **spec: Any) -> dict[str, Any]:
        return {
            "kind": "Certificate",
            "name": name,
            "spec": {"certificate": self.chain, "private_key": self.key, **spec},
        }

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """The chain and the key as files (key 0600), replaced atomically if they exist."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = (directory / f"{stem}.pem", directory / f"{stem}.key")
        for path, text in zip(paths, (self.chain, self.key), strict=True):
            partial = path.with_suffix(path.suffix + ".new")
            partial.write_text(text)
            partial.chmod(0o600)
            partial.replace(path)
        return paths

    def file_document(self, name: str, directory: Path, stem: str | None = None) -> dict[str, Any]:
        chain, key = self.write(directory, stem or name)
        return {
            "kind": "Certificate",
            "name": name,
            "spec": {"certificate_file": str(chain), "private_key_file": str(key)},
        }

    def key_fragments(self) -> list[str]:
        """What would give the key away if it showed up anywhere: each base64 line of it."""
        return [line for line in self.key.splitlines() if _BODY_LINE.match(line)]


class TestCa:
    """A CA that issues key pairs (RSA by default)."""

    __test__ = False  # not a pytest class

    def __init__(self, key_type: trustme.KeyType = RSA, name: str = "xds-server test") -> None:
        self.ca = trustme.CA(key_type=key_type, organization_name=name)

    @property
    def pem(self) -> str:
        return self.ca.cert_pem.bytes().decode()

    def bundle_document(self, name: str, **spec: Any) -> dict[str, Any]:
        return {"kind": "Certificate", "name": name, "spec": {"ca_bundle": self.pem, **spec}}

    def issue(
        self,
        *names: str,
        key_type: trustme.KeyType = RSA,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> KeyPair:
        leaf = self.ca.issue_cert(
            *names,
            common_name=names[0] if names else None,
            key_type=key_type,
            not_before=not_before,
            not_after=not_after,
        )
        chain = "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems)
        return KeyPair(chain, leaf.private_key_pem.bytes().decode())

    def intermediate(self) -> TestCa:
        child = TestCa.__new__(TestCa)
        child.ca = self.ca.create_child_ca(key_type=RSA)
        return child
