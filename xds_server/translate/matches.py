"""A rule's ``Match`` -> Envoy's ``RouteMatch``."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from xds_server.model.route import HeaderMatch, Match, QueryParamMatch
from xds_server.translate.precedence import canonical_prefix


def regex(pattern: str) -> Any:
    return regex_pb2.RegexMatcher(regex=pattern)


def _header(header: HeaderMatch) -> Any:
    result = route_pb2.HeaderMatcher(name=header.name, invert_match=header.invert)
    if header.present:
        result.present_match = True
    elif header.exact is not None:
        result.string_match.CopyFrom(string_pb2.StringMatcher(exact=header.exact))
    elif header.prefix is not None:
        result.string_match.CopyFrom(string_pb2.StringMatcher(prefix=header.prefix))
    elif header.regex is not None:
        result.string_match.CopyFrom(string_pb2.StringMatcher(safe_regex=regex(header.regex)))
    return result


def _query(query: QueryParamMatch) -> Any:
    result = route_pb2.QueryParameterMatcher(name=query.name)
    if query.present:
        result.present_match = True
    elif query.exact is not None:
        result.string_match.CopyFrom(string_pb2.StringMatcher(exact=query.exact))
    elif query.regex is not None:
        result.string_match.CopyFrom(string_pb2.StringMatcher(safe_regex=regex(query.regex)))
    return result


def route_match(match: Match) -> Any:
    """Prefixes match whole segments (``path_separated_prefix``), as in Gateway API."""
    result = route_pb2.RouteMatch()
    path = match.route_path
    if path is None:
        result.prefix = "/"
    elif path.exact is not None:
        result.path = path.exact
    elif path.prefix is not None:
        prefix = canonical_prefix(path.prefix)
        if prefix == "/":
            result.prefix = "/"
        else:
            result.path_separated_prefix = prefix
    elif path.regex is not None:
        result.safe_regex.CopyFrom(regex(path.regex))
    result.headers.extend(_header(header) for header in match.headers)
    if match.method is not None:
        result.headers.append(
            route_pb2.HeaderMatcher(
                name=":method", string_match=string_pb2.StringMatcher(exact=match.method.value)
            )
        )
    result.query_parameters.extend(_query(query) for query in match.query_params)
    return result
