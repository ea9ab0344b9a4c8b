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

from xds_server.admin.certificates import (
    CertificateInfo,
    describe_certificate,
    redact_certificate,
)
from xds_server.model import (
    AuthPolicyDocument,
    AuthPolicySpec,
    CertificateDocument,
    Kind,
    ListenerDocument,
    ListenerSpec,
    RateLimitPolicyDocument,
    RateLimitPolicySpec,
    RetryPolicyDocument,
    RouteDocument,
    RouteSpec,
    ServicePolicyDocument,
    TlsPolicyDocument,
)
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.model.tls import TlsPolicySpec


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
    #: Read-only ``info`` that reads add (computed from the stored spec), and its schema.
    describe: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    info_model: type[BaseModel] | None = None

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


def _listener_uses_policy(spec: ListenerSpec, value: str) -> bool:
    return spec.tls_policy == value


def _service_policy_uses_tls(spec: ServicePolicySpec, value: str) -> bool:
    return spec.tls_policy == value


def _tls_policy_uses_certificate(spec: TlsPolicySpec, value: str) -> bool:
    used: set[str] = set()
    if spec.downstream is not None:
        used.update(spec.downstream.certificate_names())
        if spec.downstream.client_certificate is not None:
            used.add(spec.downstream.client_certificate.ca)
    if spec.upstream is not None:
        used.update(n for n in (spec.upstream.ca, spec.upstream.client_certificate) if n)
    return value in used


def _policy_on_listener(spec: AuthPolicySpec | RateLimitPolicySpec, value: str) -> bool:
    return value in spec.listeners


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
                ListFilter(
                    "tls_policy", "Only listeners using this TLS policy.", _listener_uses_policy
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
            filters=(
                ListFilter(
                    "tls_policy",
                    "Only service policies using this TLS policy.",
                    _service_policy_uses_tls,
                ),
            ),
        ),
        ResourceKind(
            Kind.TLS_POLICY,
            "tls-policies",
            TlsPolicyDocument,
            "tls_policies",
            "How Envoy speaks TLS to clients of https listeners (downstream) and to services "
            "(upstream).",
            filters=(
                ListFilter(
                    "certificate",
                    "Only TLS policies using this certificate (or CA bundle).",
                    _tls_policy_uses_certificate,
                ),
            ),
        ),
        ResourceKind(
            Kind.CERTIFICATE,
            "certificates",
            CertificateDocument,
            "certificates",
            "A certificate chain with its private key (write-only: never shown), or a CA "
            "bundle; inline PEM or file paths. Reads add info: subject, SANs, issuer, "
            "validity and fingerprint.",
            redact=redact_certificate,
            describe=describe_certificate,
            info_model=CertificateInfo,
        ),
        ResourceKind(
            Kind.AUTH_POLICY,
            "auth-policies",
            AuthPolicyDocument,
            "auth_policies",
            "JWT authentication (OAuth2/OIDC tokens): the issuers trusted, and the listeners "
            "on which every request needs a token; route rules may require it, require "
            "claims, or opt out.",
            filters=(
                ListFilter(
                    "listener",
                    "Only policies applying to every request of this listener.",
                    _policy_on_listener,
                ),
            ),
        ),
        ResourceKind(
            Kind.RATE_LIMIT_POLICY,
            "rate-limit-policies",
            RateLimitPolicyDocument,
            "rate_limit_policies",
            "A local (per Envoy) token bucket for the requests of listeners and route rules, "
            "optionally one per header value or client address.",
            filters=(
                ListFilter(
                    "listener",
                    "Only policies applying to every request of this listener.",
                    _policy_on_listener,
                ),
            ),
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
