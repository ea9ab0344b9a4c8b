"""``Intention`` documents -> the Envoy RBAC rules of their destination's inbound listener.

Precedence is Consul's: a caller is judged by the intention naming it exactly if there is
one, otherwise by the ``*`` intention, otherwise by the mesh's ``default_action``. An
intention with ``permissions`` checks them in order; the first that matches the request
decides, and a request none matches falls to ``default_action`` (not to the ``*``
intention).

All of it becomes one RBAC whose action is the opposite of the default: with default deny,
ALLOW policies (a call is let in when one of them matches), with default allow, DENY
policies. Each policy says when the decision differs from the default:

- an intention whose ``action`` is not the default: its caller, any request;
- a permission whose action is not the default: its caller, its match, and none of the
  earlier permissions of the opposite action (the first match decides);
- the ``*`` intention's caller is any SPIFFE ID of the trust domain *except* the services
  that have an exact intention, so an exact deny beats a ``*`` allow (and the reverse).

Callers are matched on the URI SAN of their verified certificate (Envoy's
``authenticated.principal_name``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.type.matcher.v3 import path_pb2, string_pb2

from xds_server.model.mesh import Action, HttpPermission, IntentionSpec, MeshSpec, spiffe_id
from xds_server.model.route import Match
from xds_server.translate.matches import route_match

WILDCARD: Final = "*"
#: One intention: its document name and spec.
Named = tuple[str, IntentionSpec]


def _principal(trust_domain: str, source: str, exact_sources: Sequence[str]) -> Any:
    if source != WILDCARD:
        return rbac_pb2.Principal(
            authenticated=rbac_pb2.Principal.Authenticated(
                principal_name=string_pb2.StringMatcher(exact=spiffe_id(trust_domain, source))
            )
        )
    anyone = rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(
            principal_name=string_pb2.StringMatcher(prefix=f"spiffe://{trust_domain}/")
        )
    )
    if not exact_sources:
        return anyone
    judged_elsewhere = rbac_pb2.Principal(
        or_ids=rbac_pb2.Principal.Set(
            ids=[_principal(trust_domain, source, ()) for source in exact_sources]
        )
    )
    return rbac_pb2.Principal(
        and_ids=rbac_pb2.Principal.Set(ids=[anyone, rbac_pb2.Principal(not_id=judged_elsewhere)])
    )


def _all(rules: list[Any]) -> Any:
    if not rules:
        return rbac_pb2.Permission(any=True)
    if len(rules) == 1:
        return rules[0]
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=rules))


def _http(permission: HttpPermission) -> Any:
    """All the conditions given must hold: path, one of the methods, every header."""
    rules: list[Any] = []
    if permission.path_exact is not None or permission.path_prefix is not None:
        path = (
            string_pb2.StringMatcher(exact=permission.path_exact)
            if permission.path_exact is not None
            else string_pb2.StringMatcher(prefix=permission.path_prefix or "/")
        )
        rules.append(rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=path)))
    if permission.methods:
        methods = [
            rbac_pb2.Permission(
                header=route_pb2.HeaderMatcher(
                    name=":method", string_match=string_pb2.StringMatcher(exact=method.value)
                )
            )
            for method in permission.methods
        ]
        rules.append(
            methods[0]
            if len(methods) == 1
            else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=methods))
        )
    if permission.headers:
        headers = route_match(Match(headers=permission.headers)).headers
        rules.extend(rbac_pb2.Permission(header=header) for header in headers)
    return _all(rules)


def _policies(
    name: str, spec: IntentionSpec, decisive: Action, principal: Any, l7: bool
) -> list[tuple[str, Any]]:
    """The policies of one intention: when its decision for a call is ``decisive``."""
    if spec.action is not None:
        if spec.action is not decisive:
            return []
        return [(name, rbac_pb2.Policy(permissions=[_all([])], principals=[principal]))]
    if not l7:
        return []  # validation refuses permissions on a tcp destination: the default applies
    result: list[tuple[str, Any]] = []
    overruled: list[Any] = []  # earlier permissions that decide the other way
    for index, permission in enumerate(spec.permissions):
        match = _http(permission.http)
        if permission.action is decisive:
            rules = [match]
            if overruled:
                earlier = rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=overruled))
                rules.append(rbac_pb2.Permission(not_rule=earlier))
            policy = rbac_pb2.Policy(permissions=[_all(list(rules))], principals=[principal])
            result.append((f"{name}/permissions[{index}]", policy))
        else:
            overruled = [*overruled, match]
    return result


@lru_cache(maxsize=4096)
def rbac_rules(mesh: MeshSpec, intentions: tuple[Named, ...], l7: bool) -> Any:
    """The RBAC of a destination whose intentions are ``intentions`` (sorted by name);
    ``l7``: an http destination (permissions apply)."""
    decisive = Action.ALLOW if mesh.default_action is Action.DENY else Action.DENY
    rules = rbac_pb2.RBAC(
        action=rbac_pb2.RBAC.ALLOW if decisive is Action.ALLOW else rbac_pb2.RBAC.DENY
    )
    exact = sorted({spec.source for _, spec in intentions if spec.source != WILDCARD})
    for name, spec in intentions:
        principal = _principal(mesh.trust_domain, spec.source, exact)
        for policy_name, policy in _policies(name, spec, decisive, principal, l7):
            rules.policies[policy_name].CopyFrom(policy)
    return rules


def by_destination(intentions: Mapping[str, IntentionSpec]) -> dict[str, tuple[Named, ...]]:
    """Each destination's intentions, sorted by name."""
    result: dict[str, list[Named]] = {}
    for name in sorted(intentions):
        spec = intentions[name]
        result.setdefault(spec.destination, []).append((name, spec))
    return {destination: tuple(items) for destination, items in result.items()}
