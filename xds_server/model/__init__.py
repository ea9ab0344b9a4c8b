"""The domain: what exists (``inventory``) and what operators want (the documents).

The operator documents are pydantic models and the REST API's contract; see
``document.py`` for the envelope and ``config.py`` for the whole config.
"""

from xds_server.model.auth import AuthPolicySpec
from xds_server.model.certificate import CertificateSpec
from xds_server.model.config import Config, Entry, RawDocument
from xds_server.model.document import (
    AnyDocument,
    AuthPolicyDocument,
    CertificateDocument,
    Document,
    Kind,
    ListenerDocument,
    RateLimitPolicyDocument,
    RetryPolicyDocument,
    RouteDocument,
    ServicePolicyDocument,
    Spec,
    TcpRouteDocument,
    TlsPolicyDocument,
    TlsRouteDocument,
    parse_document,
    parse_spec,
)
from xds_server.model.duration import Duration
from xds_server.model.inventory import Endpoint, Health, Inventory, Service
from xds_server.model.kinds import KINDS, KindInfo, kind_info, kind_named
from xds_server.model.listener import ListenerSpec
from xds_server.model.problems import InvalidDocuments, Problem
from xds_server.model.rate_limit import RateLimitPolicySpec
from xds_server.model.retry import RetryPolicySpec
from xds_server.model.route import RouteSpec
from xds_server.model.service_policy import ServicePolicySpec
from xds_server.model.streams import TcpRouteSpec, TlsRouteSpec
from xds_server.model.tls import TlsPolicySpec
from xds_server.model.validation import ValidationReport, validate_config

__all__ = [
    "KINDS",
    "AnyDocument",
    "AuthPolicyDocument",
    "AuthPolicySpec",
    "CertificateDocument",
    "CertificateSpec",
    "Config",
    "Document",
    "Duration",
    "Endpoint",
    "Entry",
    "Health",
    "InvalidDocuments",
    "Inventory",
    "Kind",
    "KindInfo",
    "ListenerDocument",
    "ListenerSpec",
    "Problem",
    "RateLimitPolicyDocument",
    "RateLimitPolicySpec",
    "RawDocument",
    "RetryPolicyDocument",
    "RetryPolicySpec",
    "RouteDocument",
    "RouteSpec",
    "Service",
    "ServicePolicyDocument",
    "ServicePolicySpec",
    "Spec",
    "TcpRouteDocument",
    "TcpRouteSpec",
    "TlsPolicyDocument",
    "TlsPolicySpec",
    "TlsRouteDocument",
    "TlsRouteSpec",
    "ValidationReport",
    "kind_info",
    "kind_named",
    "parse_document",
    "parse_spec",
    "validate_config",
]
