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


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise invalid(
            "name",
            f"{value!r} is not a valid name: use 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit",
        )
    return value


def _check_service_name(value: str) -> str:
    if not _SERVICE_NAME.fullmatch(value):
        raise invalid(
            "service_name",
            f"{value!r} is not a valid service name: use 1-253 letters, digits, '.', '_' or "
            "'-', starting and ending with a letter or digit",
        )
    return value


def _check_group_name(value: str) -> str:
    if not _SERVICE_NAME.fullmatch(value):
        raise invalid(
            "group_name",
            f"{value!r} is not a valid proxy group name: use 1-253 letters, digits, '.', '_' "
            "or '-', starting and ending with a letter or digit",
        )
    return value


def _check_hostname(value: str) -> str:
    if len(value) > _MAX_HOSTNAME or not _HOSTNAME.fullmatch(value):
        raise invalid(
            "hostname",
            f"{value!r} is not a valid hostname: lowercase DNS labels separated by '.'",
        )
    return value


def _check_hostname_match(value: str) -> str:
    if len(value) > _MAX_HOSTNAME or not _HOSTNAME_MATCH.fullmatch(value):
        raise invalid(
            "hostname",
            f"{value!r} is not a valid hostname: use '*', an exact lowercase hostname, or "
            "'*.' followed by one (e.g. '*.example.com')",
        )
    return value


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
