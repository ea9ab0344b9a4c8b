"""The resource kinds the REST API serves, and what differs between them.

Everything else (routes, validation, history) is generic over a :class:`ResourceKind`. A new
kind (``tls-policies``, ``certificates``) is one more entry here: its URL segment, its
document model, the ``Config`` field that holds it, its list filters, and ``redact`` for
write-only fields (a certificate's private key is accepted by ``PUT`` and never returned by
any read, list, history entry or write result).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel

from xds_server.model import (
    Kind,
    ListenerDocument,
    ListenerSpec,
    RetryPolicyDocument,
    RouteDocument,
    RouteSpec,
    ServicePolicyDocument,
)


@dataclass(frozen=True, slots=True)
class ListFilter:
    """A ``GET`` list query parameter: keeps the documents whose parsed spec ``matches``."""

    param: str
    description: str
    matches: Callable[[Any, str], bool]


def _as_is(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return spec


@dataclass(frozen=True, slots=True)
class ResourceKind:
    kind: Kind
    #: The URL segment: ``/v1/{path}``.
    path: str
    #: The model's ``{kind, name, spec}`` class.
    document_model: type[BaseModel]
    #: The attribute of ``model.Config`` holding this kind's entries.
    config_field: str
    summary: str
    filters: tuple[ListFilter, ...] = ()
    #: The spec as it may leave the server (write-only fields removed).
    redact: Callable[[Mapping[str, Any]], Mapping[str, Any]] = _as_is

    @property
    def spec_model(self) -> type[BaseModel]:
        annotation = self.document_model.model_fields["spec"].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        return annotation


def _route_has_listener(spec: RouteSpec, value: str) -> bool:
    return value in spec.listeners


def _route_sends_to(spec: RouteSpec, value: str) -> bool:
    return any(value in rule.services for rule in spec.rules)


def _route_has_hostname(spec: RouteSpec, value: str) -> bool:
    return value in spec.hostnames


def _listener_for_group(spec: ListenerSpec, value: str) -> bool:
    return spec.delivered_to(value)


@cache
def resource_kinds() -> tuple[ResourceKind, ...]:
    """Every kind, in the order of the API reference."""
    return (
        ResourceKind(
            Kind.LISTENER,
            "listeners",
            ListenerDocument,
            "listeners",
            "An address and port on which a proxy group accepts HTTP traffic.",
            filters=(
                ListFilter(
                    "group",
                    "Only listeners an Envoy of this proxy group gets (those listing it, and "
                    "those for every group).",
                    _listener_for_group,
                ),
            ),
        ),
        ResourceKind(
            Kind.ROUTE,
            "routes",
            RouteDocument,
            "routes",
            "Which requests on which listeners go to which services.",
            filters=(
                ListFilter(
                    "listener", "Only routes attached to this listener.", _route_has_listener
                ),
                ListFilter(
                    "service",
                    "Only routes sending to this service (as a backend or a mirror).",
                    _route_sends_to,
                ),
                ListFilter(
                    "hostname", "Only routes listing exactly this hostname.", _route_has_hostname
                ),
            ),
        ),
        ResourceKind(
            Kind.RETRY_POLICY,
            "retry-policies",
            RetryPolicyDocument,
            "retry_policies",
            "When and how Envoy retries a request; routes use it by name.",
        ),
        ResourceKind(
            Kind.SERVICE_POLICY,
            "service-policies",
            ServicePolicyDocument,
            "service_policies",
            "How Envoy talks to one registry service (named like the service).",
        ),
    )


def kind_named(kind: str) -> ResourceKind | None:
    """The kind by its name (``Route``) or URL segment (``routes``)."""
    for resource in resource_kinds():
        if kind in (resource.kind.value, resource.path):
            return resource
    return None


def redact(kind: str, spec: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``spec`` as it may be shown, for a document of any kind.

    A kind this version does not know (written by a newer one) is not shown at all: it may
    have write-only fields this version cannot tell apart."""
    resource = kind_named(kind)
    if spec is None or resource is None:
        return None
    return resource.redact(spec)
