"""``Certificate``: a certificate chain with its private key, or a bundle of CA certificates.

Exactly one of four forms:

- ``certificate`` + ``private_key``: PEM text (chain leaf first, then each issuer). The key is
  write-only: stored, sent to Envoy over SDS, never shown by the API.
- ``certificate_file`` + ``private_key_file``: absolute paths. Envoy reads (and watches) the
  files, so the key never passes through the API, the store or the xDS stream; the server
  also reads them, where it can, to check them and show what they hold.
- ``ca_bundle``: PEM text of one or more CA certificates (to verify peers against).
- ``ca_bundle_file``: the same, as a path.

Inline PEM is checked here (parsed, key type and size Envoy accepts, key matches the first
certificate, chain in order). Expiry needs a clock and files need I/O: both are checked by
``validation.validate_config`` when the caller passes ``now`` and a file reader.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, Field, model_validator

from xds_server.model.base import StrictModel
from xds_server.model.errors import invalid
from xds_server.model.pki import (
    PemError,
    check_bundle,
    check_chain,
    check_key_pair,
    check_private_key,
)

#: 256 KiB: far more than any real chain or bundle needs.
MAX_PEM_LENGTH: Final = 256 * 1024
MAX_PATH_LENGTH: Final = 4096


def _pem(value: str) -> str:
    if "-----BEGIN" not in value:
        raise invalid("pem", "expected PEM text (-----BEGIN ...-----)")
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise invalid("path", "must be an absolute path (starting with '/')")
    if "\x00" in value or "\n" in value or "\r" in value:
        raise invalid("path", "a path must not contain NUL, CR or LF")
    return value


def _pem_check(check: Callable[[str], object]) -> Callable[[str], str]:
    """A validator refusing PEM text that ``check`` finds unusable, with its reason."""

    def validate(value: str) -> str:
        try:
            check(value)
        except PemError as error:
            raise invalid("pem", error.reason) from None
        return value

    return validate


PemText = Annotated[str, Field(min_length=1, max_length=MAX_PEM_LENGTH), AfterValidator(_pem)]
ChainPem = Annotated[PemText, AfterValidator(_pem_check(check_chain))]
PrivateKeyPem = Annotated[PemText, AfterValidator(_pem_check(check_private_key))]
BundlePem = Annotated[PemText, AfterValidator(_pem_check(check_bundle))]
FilePath = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PATH_LENGTH, json_schema_extra={"pattern": "^/"}),
    AfterValidator(_check_path),
]


class CertificateForm(StrEnum):
    KEY_PAIR = "key_pair"
    CA_BUNDLE = "ca_bundle"


_FORMS: Final = (
    ("certificate", "private_key"),
    ("certificate_file", "private_key_file"),
    ("ca_bundle",),
    ("ca_bundle_file",),
)
_ONE_FORM: Final = (
    "set exactly one of: certificate with private_key, certificate_file with private_key_file, "
    "ca_bundle, or ca_bundle_file"
)


class CertificateSpec(StrictModel):
    #: PEM chain: the certificate first, then each intermediate (its issuer next).
    certificate: ChainPem | None = None
    #: PEM private key of the first certificate; write-only (never shown by the API).
    private_key: PrivateKeyPem | None = Field(default=None, json_schema_extra={"writeOnly": True})
    certificate_file: FilePath | None = None
    private_key_file: FilePath | None = None
    #: PEM CA certificates that peers' certificates are verified against.
    ca_bundle: BundlePem | None = None
    ca_bundle_file: FilePath | None = None
    #: Accept a certificate that has expired (otherwise an error).
    allow_expired: bool = False

    @model_validator(mode="after")
    def _one_form_and_valid(self) -> CertificateSpec:
        given = [form for form in _FORMS if any(getattr(self, f) is not None for f in form)]
        if len(given) != 1:
            raise invalid("one_of", _ONE_FORM)
        missing = [f for f in given[0] if getattr(self, f) is None]
        if missing:
            together = " and ".join(given[0])
            raise invalid("one_of", f"{together} go together: {missing[0]} is missing")
        if self.certificate is not None and self.private_key is not None:
            try:
                check_key_pair(self.certificate, self.private_key)
            except PemError as error:
                raise invalid("key_mismatch", f"private_key: {error.reason}") from None
        return self

    @property
    def form(self) -> CertificateForm:
        if self.ca_bundle is not None or self.ca_bundle_file is not None:
            return CertificateForm.CA_BUNDLE
        return CertificateForm.KEY_PAIR

    @property
    def uses_files(self) -> bool:
        return any(
            path is not None
            for path in (self.certificate_file, self.private_key_file, self.ca_bundle_file)
        )
