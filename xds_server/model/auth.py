"""``AuthPolicy``: JWT authentication (OAuth2 / OIDC access tokens) at the edge.

A policy lists the token issuers it trusts (``providers``: issuer, audiences, keys) and the
``listeners`` on which every request needs a valid token from one of them. Route rules refine
it (``Rule.auth``): ``{policy: NAME}`` requires a policy's token on that rule only (on any
listener), ``{disabled: true}`` lets the rule's requests through without a token (health
checks), and ``claims`` requires the token's claims to have values (``scope`` containing
``read:orders``). A missing or invalid token is answered 401 by Envoy; a valid token without
the required claims, 403.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from xds_server.model.base import NonEmpty, StrictModel
from xds_server.model.duration import Duration
from xds_server.model.errors import invalid
from xds_server.model.http import HeaderValue, MutableHeaderName
from xds_server.model.names import Name
from xds_server.model.telemetry import split_host_port

MAX_TEXT: Final = 1024
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT, pattern=r"^[^\x00-\x1f\x7f]+$")]
#: A cookie or query parameter name.
Token = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
]


def _unique(values: tuple[Any, ...], what: str) -> None:
    duplicates = sorted({str(value) for value in values if values.count(value) > 1})
    if duplicates:
        raise invalid("unique", f"{what} listed more than once: {', '.join(duplicates)}")


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("url", f"{url!r} is not an http:// or https:// URL with a host")
    if parts.username or parts.password or parts.fragment:
        raise invalid("url", "the JWKS URL must not carry credentials or a fragment")
    if any(char in url for char in " \t\r\n\x00\\"):
        raise invalid("url", "the JWKS URL must not contain whitespace or backslashes")
    try:
        port = parts.port
    except ValueError:
        raise invalid("url", f"{url!r} has an invalid port") from None
    if port == 0:
        raise invalid("url", f"{url!r} has an invalid port")
    host = parts.hostname
    try:
        split_host_port(f"[{host}]:1" if ":" in host else f"{host}:1")
    except ValueError:
        raise invalid("url", f"{host!r} is neither an IP address nor a DNS name") from None
    return url


def _inline_json(value: Any) -> Any:
    """An inline JWKS may be given as an object (YAML, JSON) or as JSON text; an object is
    kept as canonical text (sorted keys), so the model stays hashable."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _check_jwks(text: str) -> str:
    try:
        parsed = json.loads(text)
    except ValueError:
        raise invalid("jwks", 'inline is not JSON (a JWKS: {"keys": [...]})') from None
    keys = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(keys, list) or not keys:
        raise invalid("jwks", 'inline must be a JWKS: an object with a non-empty "keys" list')
    for index, key in enumerate(keys):
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC", "oct", "OKP"):
            raise invalid("jwks", f"keys[{index}] needs a kty of RSA, EC, oct or OKP (RFC 7517)")
    return text


class Jwks(StrictModel):
    """The issuer's public keys: exactly one of ``url`` or ``inline``.

    ``url`` (http or https) is fetched by Envoy through a cluster the control plane makes
    from the URL's host and port, named ``jwks/<policy>/<provider>``. ``inline`` is the JWKS
    itself (an object, or its JSON text).
    """

    url: Annotated[str, AfterValidator(_check_url), Field(max_length=2048)] | None = None
    #: ``https`` only: a ``Certificate`` (CA bundle) the JWKS server's certificate must chain
    #: to (checked for the URL's host name); without it the server is not verified (a
    #: warning).
    ca: Name | None = None
    #: How long a fetch may take.
    timeout: Duration = Duration(5000)
    #: How long Envoy keeps the keys before fetching them again (Envoy's default: 10m).
    cache_duration: Duration | None = None
    inline: Annotated[str, BeforeValidator(_inline_json), AfterValidator(_check_jwks)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Jwks:
        if (self.url is None) == (self.inline is None):
            raise invalid("one_of", "set exactly one of url and inline")
        if self.url is None and (self.ca is not None or self.cache_duration is not None):
            raise invalid("inline", "ca and cache_duration are for a JWKS fetched from url")
        if self.ca is not None and not self.https:
            raise invalid("ca", "ca verifies an https JWKS server; the URL is http")
        if self.timeout.milliseconds == 0:
            raise invalid("timeout", "the fetch timeout must be longer than 0s")
        return self

    @property
    def https(self) -> bool:
        return self.url is not None and urlsplit(self.url).scheme == "https"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "" if self.url else ""

    @property
    def port(self) -> int:
        return (urlsplit(self.url).port if self.url else None) or (443 if self.https else 80)


class TokenHeader(StrictModel):
    name: MutableHeaderName
    #: What precedes the token in the value (e.g. ``"Bearer "``); empty: the whole value.
    prefix: Annotated[str, Field(max_length=256)] = ""

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if any(char in prefix for char in "\x00\r\n"):
            raise invalid("header_value", "a prefix must not contain NUL, CR or LF")
        return prefix


class TokenSources(StrictModel):
    """Where the token is read from. All empty (the default): ``Authorization: Bearer <token>``
    and the ``access_token`` query parameter, as RFC 6750 has it."""

    headers: tuple[TokenHeader, ...] = ()
    cookies: tuple[Token, ...] = ()
    query_params: tuple[Token, ...] = ()

    @model_validator(mode="after")
    def _no_repeats(self) -> TokenSources:
        _unique(tuple(h.name.lower() for h in self.headers), "headers are")
        _unique(self.cookies, "cookies are")
        _unique(self.query_params, "query parameters are")
        return self


class ClaimHeader(StrictModel):
    """Copy a claim of a verified token into a request header for the service."""

    #: A claim name; nested claims with ``.`` (``address.country``).
    claim: Text
    header: MutableHeaderName


class JwtProvider(StrictModel):
    """A token issuer: an OAuth2 authorization server or OIDC provider."""

    name: Name
    #: The ``iss`` a token must have (any when unset).
    issuer: Text | None = None
    #: The token's ``aud`` must include one of them (any when empty).
    audiences: tuple[Text, ...] = ()
    jwks: Jwks
    token_sources: TokenSources = TokenSources()
    claim_to_headers: tuple[ClaimHeader, ...] = ()
    #: Pass the token on to the service (default: removed from the request).
    forward: bool = False
    #: Accepted clock difference for ``exp`` and ``nbf``.
    clock_skew: Duration = Duration(60_000)

    @model_validator(mode="after")
    def _headers(self) -> JwtProvider:
        _unique(tuple(c.header.lower() for c in self.claim_to_headers), "claim headers are")
        _unique(self.audiences, "audiences are")
        if self.clock_skew.milliseconds % 1000:
            raise invalid("clock_skew", "clock_skew is whole seconds")
        return self


class AuthPolicySpec(StrictModel):
    #: Every request on these listeners needs a valid token (rules may opt out). Empty: the
    #: policy applies only where a route rule names it.
    listeners: tuple[Name, ...] = ()
    #: A token from any one of them is accepted.
    providers: NonEmpty[JwtProvider]

    @model_validator(mode="after")
    def _unique_names(self) -> AuthPolicySpec:
        _unique(self.listeners, "listeners are")
        _unique(tuple(p.name for p in self.providers), "provider names are")
        return self


class ClaimRequirement(StrictModel):
    """``exact``: the claim is this string. ``contains``: the claim is a list holding this
    string, or a space-separated string (an OAuth2 ``scope``) with it as one of its words."""

    claim: Annotated[str, Field(min_length=1, max_length=256)]
    exact: HeaderValue | None = None
    contains: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^\S+$")] | None = None

    @model_validator(mode="after")
    def _one(self) -> ClaimRequirement:
        if (self.exact is None) == (self.contains is None):
            raise invalid("one_of", "set exactly one of exact and contains")
        return self


class RuleAuth(StrictModel):
    """A route rule's authentication, refining its listeners' ``AuthPolicy``."""

    #: Require this ``AuthPolicy``'s token on this rule (on every listener of the route).
    policy: Name | None = None
    #: No token needed for this rule, even where the listener's policy requires one.
    disabled: bool = False
    #: The token's claims must meet all of these, else 403. Needs a token: ``policy`` or an
    #: ``AuthPolicy`` on each of the route's listeners.
    claims: tuple[ClaimRequirement, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> RuleAuth:
        if self.disabled and (self.policy is not None or self.claims):
            raise invalid("disabled", "a rule with auth disabled takes no policy or claims")
        if not self.disabled and self.policy is None and not self.claims:
            raise invalid("auth", "set policy, claims or disabled: true")
        return self

    def __hash__(self) -> int:
        return hash((self.policy, self.disabled, self.claims))
