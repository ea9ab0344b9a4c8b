"""Bearer-token authentication of the admin API.

Tokens come from a file (``--admin-tokens FILE``), YAML or JSON, that holds only SHA-256
hashes of the tokens, never the tokens themselves::

    tokens:
      - {name: ci-deploy, token_sha256: 5e88…42d8, role: write}
      - {name: dashboard, token_sha256: 9b74…c1a0, role: read}

(a bare list works too). Hash a token with ``printf %s "$TOKEN" | sha256sum``.

- A request sends ``Authorization: Bearer <token>``; the SHA-256 of what it sends is compared
  with every known hash with ``hmac.compare_digest`` (no early exit, no timing hint).
- No token or an unknown one: **401** with ``WWW-Authenticate: Bearer``; a ``read`` token on a
  write (any method but GET, HEAD, OPTIONS; dry runs included): **403**. Both are
  ``application/problem+json``, refused before the body is read.
- ``/healthz``, ``/readyz`` and ``/metrics`` stay open (probes and Prometheus scrape without
  a token); everything else, ``/openapi.json`` and ``/docs`` included, needs a token.
- The token's ``name`` is the actor recorded in history (:func:`request_actor`).
- The file is re-read when it changes (checked at most once a second); a file that no longer
  parses keeps the previous tokens and logs an error.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from xds_server.admin.problem import problem_response

log = logging.getLogger("xds_server.admin.auth")

Role = Literal["read", "write"]
#: Paths answered without a token.
OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
#: The console's pages and assets: they hold no data (the browser reads it from the API
#: with the token), so a browser can load them before it has one.
OPEN_PREFIXES: Final = ("/ui/",)
#: Methods a ``read`` token may use.
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: Where the authenticated token's name is kept in the ASGI scope's ``state``.
ACTOR_KEY: Final = "xds_server.actor"
REALM: Final = 'Bearer realm="xds-server"'

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class AdminToken:
    name: str
    token_sha256: str
    role: Role

    def allows(self, method: str) -> bool:
        return self.role == "write" or method.upper() in READ_METHODS


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as the tokens file holds it."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenSet:
    """Known tokens; :meth:`find` answers in constant time w.r.t. the secrets."""

    def __init__(self, tokens: Iterable[AdminToken]) -> None:
        self.tokens = tuple(tokens)
        if not self.tokens:
            raise ValueError("no tokens: the admin API would refuse every request")

    def find(self, presented: str) -> AdminToken | None:
        digest = hash_token(presented)
        found: AdminToken | None = None
        for token in self.tokens:  # every one, whatever matched
            if hmac.compare_digest(digest, token.token_sha256):
                found = token
        return found


def parse_tokens(data: Any, source: str = "tokens") -> TokenSet:
    """Tokens from parsed YAML/JSON: a list of ``{name, token_sha256, role}`` or
    ``{"tokens": [...]}``. Raises ``ValueError`` naming the entry and field at fault."""
    if isinstance(data, Mapping) and set(data) == {"tokens"}:
        data = data["tokens"]
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a list of tokens (or {{tokens: [...]}})")
    tokens: list[AdminToken] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for index, item in enumerate(data):
        where = f"{source}: tokens[{index}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: expected an object with name, token_sha256 and role")
        unknown = set(item) - {"name", "token_sha256", "role"}
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)} (never put a token here)")
        name, digest, role = item.get("name"), item.get("token_sha256"), item.get("role")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}.name: a non-empty string is required")
        if name in names:
            raise ValueError(f"{where}.name: {name!r} is listed twice")
        if not isinstance(digest, str) or not _SHA256_HEX.match(digest.lower()):
            raise ValueError(
                f"{where}.token_sha256: 64 hex digits required (printf %s TOKEN | sha256sum)"
            )
        if digest.lower() in hashes:
            raise ValueError(f"{where}.token_sha256: the same token is listed twice")
        if role not in ("read", "write"):
            raise ValueError(f"{where}.role: read or write, not {role!r}")
        names.add(name)
        hashes.add(digest.lower())
        tokens.append(AdminToken(name, digest.lower(), role))
    return TokenSet(tokens)


def load_tokens(path: str | os.PathLike[str]) -> TokenSet:
    """Read and check a tokens file (YAML or JSON). Raises ``ValueError`` with the reason."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"admin tokens file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"admin tokens file {path}: not YAML or JSON: {exc}") from None
    return parse_tokens(data, f"admin tokens file {path}")


class TokenFile:
    """A tokens file, re-read when its modification time or size changes."""

    def __init__(self, path: str | os.PathLike[str], *, check_every: float = 1.0) -> None:
        self.path = Path(path)
        self._check_every = check_every
        self._stamp = self._stat()
        self.tokens = load_tokens(self.path)
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> TokenSet:
        now = time.monotonic()
        if now - self._checked >= self._check_every:
            self._checked = now
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self.tokens = load_tokens(self.path)
                    log.info("admin tokens reloaded from %s", self.path)
                except ValueError as error:
                    log.error("keeping the previous admin tokens: %s", error)
        return self.tokens


Tokens = TokenSet | TokenFile


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            text = bytes(value).decode("latin-1").strip()
            scheme, _, credentials = text.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None


class BearerAuth:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if (
            scope["type"] not in ("http", "websocket")
            or path in OPEN_PATHS
            or path == "/ui"
            or path.startswith(OPEN_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        tokens = self.tokens.current() if isinstance(self.tokens, TokenFile) else self.tokens
        presented = _bearer(scope)
        token = tokens.find(presented) if presented is not None else None
        method = str(scope.get("method", "GET"))
        if token is not None and token.allows(method):
            scope.setdefault("state", {})[ACTOR_KEY] = token.name
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if presented is None:
            status, slug, detail, challenge = (
                401,
                "unauthorized",
                "this endpoint needs a bearer token (Authorization: Bearer <token>)",
                REALM,
            )
        elif token is None:
            status, slug, detail, challenge = (
                401,
                "unauthorized",
                "the bearer token is not valid",
                f'{REALM}, error="invalid_token"',
            )
        else:
            status, slug, detail, challenge = (
                403,
                "forbidden",
                f"token {token.name!r} may only read; {method} needs a write token",
                f'{REALM}, error="insufficient_scope"',
            )
        log.info("admin API: %d for %s %s", status, method, path)
        response = problem_response(
            status, slug, detail, instance=path, headers={"WWW-Authenticate": challenge}
        )
        await response(scope, receive, send)


def install_auth(app: Any, tokens: Tokens) -> None:
    """Require tokens on ``app`` (a Starlette/FastAPI app, before it serves). Added last, the
    middleware is the outermost: a refused request is answered before anything else runs."""
    app.add_middleware(BearerAuth, tokens=tokens)


def request_actor(request: Request) -> str:
    """The actor recorded in history: the authenticated token's name, else ``anonymous``."""
    state = request.scope.get("state")
    name = state.get(ACTOR_KEY) if isinstance(state, Mapping) else None
    return name if isinstance(name, str) and name else "anonymous"
