"""Names of documents, services, proxy groups and hosts, with the rules Envoy and DNS impose."""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, Field

from xds_server.model.errors import invalid

NAME_PATTERN: Final = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
#: Consul service names and Envoy ``node.cluster`` values are freer than DNS labels.
SERVICE_NAME_PATTERN: Final = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$"
_LABEL: Final = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME_PATTERN: Final = rf"^{_LABEL}(\.{_LABEL})*$"
#: ``*`` (any host), an exact host, or ``*.suffix`` (any host ending in ``.suffix``).
HOSTNAME_MATCH_PATTERN: Final = rf"^(\*|(\*\.)?{_LABEL}(\.{_LABEL})*)$"

_NAME = re.compile(NAME_PATTERN)
_SERVICE_NAME = re.compile(SERVICE_NAME_PATTERN)
_HOSTNAME = re.compile(HOSTNAME_PATTERN)
_HOSTNAME_MATCH = re.compile(HOSTNAME_MATCH_PATTERN)
_MAX_HOSTNAME = 253
_SERVICE_CHARS = (
    "use 1-253 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
)


def _full_match(pattern: re.Pattern[str], value: str, field: str, what: str) -> str:
    """``value`` if it matches ``pattern`` (and fits in a DNS name), else why not."""
    if len(value) > _MAX_HOSTNAME or not pattern.fullmatch(value):
        raise invalid(field, f"{value!r} is not a valid {what}")
    return value


def _check_name(value: str) -> str:
    return _full_match(
        _NAME,
        value,
        "name",
        "name: use 1-63 lowercase letters, digits or '-', starting and ending with a letter or "
        "digit",
    )


def _check_service_name(value: str) -> str:
    return _full_match(_SERVICE_NAME, value, "service_name", f"service name: {_SERVICE_CHARS}")


def _check_group_name(value: str) -> str:
    return _full_match(_SERVICE_NAME, value, "group_name", f"proxy group name: {_SERVICE_CHARS}")


def _check_hostname(value: str) -> str:
    return _full_match(
        _HOSTNAME, value, "hostname", "hostname: lowercase DNS labels separated by '.'"
    )


def _check_hostname_match(value: str) -> str:
    return _full_match(
        _HOSTNAME_MATCH,
        value,
        "hostname",
        "hostname: use '*', an exact lowercase hostname, or '*.' followed by one (e.g. "
        "'*.example.com')",
    )


#: A document name: a DNS label.
Name = Annotated[
    str, AfterValidator(_check_name), Field(json_schema_extra={"pattern": NAME_PATTERN})
]
#: A service in the registry (Consul service name); also the Envoy cluster name.
ServiceName = Annotated[
    str,
    AfterValidator(_check_service_name),
    Field(json_schema_extra={"pattern": SERVICE_NAME_PATTERN}),
]
#: A proxy group: the ``node.cluster`` of the Envoys in it.
GroupName = Annotated[
    str,
    AfterValidator(_check_group_name),
    Field(json_schema_extra={"pattern": SERVICE_NAME_PATTERN}),
]
#: An exact hostname (redirect and rewrite targets).
Hostname = Annotated[
    str, AfterValidator(_check_hostname), Field(json_schema_extra={"pattern": HOSTNAME_PATTERN})
]
#: A hostname a route answers for: exact, ``*.suffix`` or ``*``.
HostnameMatch = Annotated[
    str,
    AfterValidator(_check_hostname_match),
    Field(json_schema_extra={"pattern": HOSTNAME_MATCH_PATTERN}),
]
