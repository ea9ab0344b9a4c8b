"""``Rule.fault`` -> Envoy's fault filter: on the listener (empty, so it does nothing by
itself) when some rule injects faults, and the rule's ``HTTPFault`` as its per-route config."""

from __future__ import annotations

from typing import Any, Final

from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2

from xds_server.model.fault import Fault
from xds_server.translate.protos import duration, pack

FAULT: Final = "envoy.filters.http.fault"
#: Percentages are sent as parts per million (four decimals of a percent).
_PER_MILLION: Final = 10_000


def fault_filter() -> Any:
    return pack(fault_pb2.HTTPFault())


def _percent(value: float) -> Any:
    return percent_pb2.FractionalPercent(
        numerator=round(value * _PER_MILLION), denominator=percent_pb2.FractionalPercent.MILLION
    )


def http_fault(fault: Fault) -> Any:
    result = fault_pb2.HTTPFault()
    if fault.delay is not None:
        result.delay.CopyFrom(
            common_fault_pb2.FaultDelay(
                fixed_delay=duration(fault.delay.duration),
                percentage=_percent(fault.delay.percent),
            )
        )
    abort = fault.abort
    if abort is not None:
        result.abort.percentage.CopyFrom(_percent(abort.percent))
        if abort.http_status is not None:
            result.abort.http_status = abort.http_status
        elif abort.grpc_status is not None:
            result.abort.grpc_status = abort.grpc_status
    header = fault.header
    if header is not None:
        matcher = route_pb2.HeaderMatcher(name=header.name)
        if header.exact is None:
            matcher.present_match = True
        else:
            matcher.string_match.CopyFrom(string_pb2.StringMatcher(exact=header.exact))
        result.headers.append(matcher)
    return pack(result)
