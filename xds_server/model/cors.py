"""``filters.cors``: answer CORS preflights and tag responses for allowed origins.

The shape follows Gateway API's ``HTTPCORSFilter``; Envoy's CORS filter does the work.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, model_validator

from xds_server.model.base import NonEmpty, StrictModel
from xds_server.model.duration import Duration
from xds_server.model.errors import invalid
from xds_server.model.http import HeaderName, HttpMethod
from xds_server.model.regex import Re2Regex

MAX_ORIGINS: Final = 64
#: An origin (``https://shop.example.com``) or the start of one, printable ASCII.
Origin = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[!-~]+$")]


class OriginMatch(StrictModel):
    """Exactly one of ``exact``, ``prefix`` or ``regex`` (RE2, the whole ``Origin`` header)."""

    exact: Origin | None = None
    prefix: Origin | None = None
    regex: Re2Regex | None = None

    @model_validator(mode="after")
    def _one(self) -> OriginMatch:
        chosen = [n for n in ("exact", "prefix", "regex") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise invalid("one_of", "set exactly one of exact, prefix, regex")
        return self


class Cors(StrictModel):
    """Which origins may call, with which methods and headers; Envoy answers preflights."""

    allow_origins: Annotated[NonEmpty[OriginMatch], Field(max_length=MAX_ORIGINS)]
    allow_methods: tuple[HttpMethod, ...] = ()
    allow_headers: tuple[HeaderName, ...] = ()
    expose_headers: tuple[HeaderName, ...] = ()
    allow_credentials: bool = False
    #: How long a browser may cache a preflight's answer (whole seconds are sent).
    max_age: Duration | None = None
