"""``Rule.fault``: inject delays and aborts into a share of a rule's requests (testing
resilience), optionally only for requests carrying a header."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from xds_server.model.base import StrictModel
from xds_server.model.duration import PositiveDuration
from xds_server.model.errors import invalid
from xds_server.model.http import HeaderName, HeaderValue

#: A share of requests, in percent (four decimals are kept).
Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]


class FaultDelay(StrictModel):
    """Hold ``percent`` % of the requests for ``duration`` before forwarding them."""

    duration: PositiveDuration
    percent: Percent = 100.0


class FaultAbort(StrictModel):
    """Answer ``percent`` % of the requests with ``http_status`` or (for gRPC) ``grpc_status``
    instead of forwarding them."""

    http_status: int | None = Field(default=None, ge=200, le=599)
    grpc_status: int | None = Field(default=None, ge=0, le=16)
    percent: Percent = 100.0

    @model_validator(mode="after")
    def _one(self) -> FaultAbort:
        if (self.http_status is None) == (self.grpc_status is None):
            raise invalid("one_of", "set exactly one of http_status, grpc_status")
        return self


class FaultHeader(StrictModel):
    """Only requests with header ``name`` (equal to ``exact`` when given) get the fault."""

    name: HeaderName
    exact: HeaderValue | None = None


class Fault(StrictModel):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    header: FaultHeader | None = None

    @model_validator(mode="after")
    def _something(self) -> Fault:
        if self.delay is None and self.abort is None:
            raise invalid("one_of", "set delay, abort or both")
        return self
