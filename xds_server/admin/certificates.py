"""Certificates as the API shows them, and the certificate files the server reads.

A ``Certificate``'s private key is write-only: ``redact`` removes it from every spec that
leaves the server (reads, lists, history, write results, dry runs). What the API shows
instead is ``info``: subject, SANs, issuer, validity and SHA-256 fingerprint of each
certificate, read from the inline PEM or from the file (never from the key).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from functools import cache
from typing import Any, Final

from pydantic import BaseModel, Field

from xds_server.model.pki import PemError, certificate_summaries

#: A certificate or key file larger than this is refused (bundles are far smaller).
MAX_FILE_BYTES: Final = 1 << 20
#: Fields that may hold key material: never shown.
WRITE_ONLY_FIELDS: Final = ("private_key",)
_KEY_MARK: Final = "PRIVATE KEY"


class FileReader:
    """Reads certificate files as text, again only when their size or mtime changed."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int], str]] = {}

    def __call__(self, path: str) -> str:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(0, "not a regular file")
        key = (info.st_mtime_ns, info.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        if info.st_size > MAX_FILE_BYTES:
            raise OSError(0, f"larger than {MAX_FILE_BYTES} bytes")
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise OSError(0, "not PEM text (not ASCII)") from None
        self._cache[path] = (key, text)
        return text


@cache
def shared_reader() -> FileReader:
    """One reader (and cache) for the process, made on first use."""
    return FileReader()


def redact_certificate(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """``spec`` without its private key (and, defensively, without any value holding a PEM
    private key, e.g. in a document written by another version)."""
    return {
        key: value
        for key, value in spec.items()
        if key not in WRITE_ONLY_FIELDS and not (isinstance(value, str) and _KEY_MARK in value)
    }


class CertificateSummaryView(BaseModel):
    subject: str = Field(description="RFC 4514, e.g. CN=shop.example.com,O=Example.")
    issuer: str
    subject_alt_names: list[str] = Field(description='e.g. "DNS:shop.example.com", "IP:10.0.0.1".')
    serial_number: str = Field(description="Hexadecimal.")
    not_before: str = Field(json_schema_extra={"format": "date-time"})
    not_after: str = Field(json_schema_extra={"format": "date-time"})
    fingerprint_sha256: str = Field(description="SHA-256 of the DER certificate, AB:CD:... .")
    key_type: str = Field(description='e.g. "RSA 2048", "ECDSA P-256", "Ed25519".')
    is_ca: bool


class CertificateInfo(BaseModel):
    """What a Certificate holds (read-only; never the private key)."""

    form: str = Field(description="key_pair or ca_bundle.")
    source: str = Field(description="inline (PEM in the document) or file (paths).")
    certificates: list[CertificateSummaryView] = Field(
        description="The chain (leaf first) or the CA bundle, in order."
    )
    error: str | None = Field(
        description="Why the certificates could not be shown (e.g. a file the server cannot "
        "read); null when they could."
    )


def describe_certificate(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``info`` of a Certificate spec (files are read through the shared reader)."""
    bundle = "ca_bundle" in spec or "ca_bundle_file" in spec
    inline = spec.get("ca_bundle" if bundle else "certificate")
    path = spec.get("ca_bundle_file" if bundle else "certificate_file")
    info: dict[str, Any] = {
        "form": "ca_bundle" if bundle else "key_pair",
        "source": "file" if path is not None else "inline",
        "certificates": [],
        "error": None,
    }
    text = inline if isinstance(inline, str) else None
    if text is None and isinstance(path, str):
        try:
            text = shared_reader()(path)
        except OSError as error:
            info["error"] = f"the server cannot read {path}: {error.strerror or 'unreadable'}"
            return info
    if text is None:
        info["error"] = "no certificate"
        return info
    try:
        summaries = certificate_summaries(text, "CA bundle" if bundle else "certificate")
    except PemError as error:
        info["error"] = error.reason
        return info
    info["certificates"] = [summary.as_json() for summary in summaries]
    return info
