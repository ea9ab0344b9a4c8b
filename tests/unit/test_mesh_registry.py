"""Where a service's mesh endpoints come from in Consul: its Connect sidecar registrations.

Three layers: the pure mapping of the shapes Consul's docs print, the test double's Connect
API (agent registration with ``Kind``/``Proxy``/``connect.sidecar_service``,
``/v1/health/connect`` and ``/v1/catalog/connect``, alias checks), and the watcher against
the double (sidecars become ``mesh_endpoints``, never services of their own, within 1 s).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.consul_double.server import AGENT_NODE, ConsulDouble
from tests.unit.test_consul_watcher import _settings, watching
from xds_server.model.inventory import Health, Inventory
from xds_server.sources.consul_mapping import (
    PROXY_KINDS,
    MappingOptions,
    endpoints_from_health,
    service_from_health,
    split_health,
)

pytest_plugins = ["tests.consul_double.fixtures"]

SAMPLES = Path("/work/shared/consul")

#: The `Proxy` block of agent/service.mdx's sample `web-sidecar-proxy` registration.
DOCS_PROXY = {
    "DestinationServiceName": "web",
    "DestinationServiceID": "web",
    "LocalServiceAddress": "127.0.0.1",
    "LocalServicePort": 8080,
    "Mode": "transparent",
    "TransparentProxy": {"OutboundListenerPort": 22500},
    "Config": {"foo": "bar"},
    "Upstreams": [{"DestinationType": "service", "DestinationName": "db", "LocalBindPort": 9191}],
}


def _docs_sidecar_entry(**service: Any) -> dict[str, Any]:
    """health.mdx's sample entry, its Service replaced by the docs' sidecar registration
    (``Kind``, ``ID``, ``Service``, ``Port`` 18080, empty ``Address``, ``Proxy``)."""
    entry: dict[str, Any] = json.loads((SAMPLES / "health-service.json").read_text())[0]
    entry["Service"] = {
        "Kind": "connect-proxy",
        "ID": "web-sidecar-proxy",
        "Service": "web-sidecar-proxy",
        "Tags": None,
        "Meta": None,
        "Namespace": "default",
        "Port": 18080,
        "Address": "",
        "Weights": {"Passing": 1, "Warning": 1},
        "Proxy": copy.deepcopy(DOCS_PROXY),
        **service,
    }
    for check in entry["Checks"]:
        if check["ServiceID"]:
            check |= {"ServiceID": "web-sidecar-proxy", "ServiceName": "web-sidecar-proxy"}
    return entry


# --- mapping ---------------------------------------------------------------------------------


def test_a_documented_sidecar_is_a_mesh_endpoint_of_its_destination_not_an_endpoint() -> None:
    read = split_health([_docs_sidecar_entry()])
    assert read.endpoints == ()
    assert read.proxy_only is True
    (mesh,) = read.mesh["web"]
    # Address "" → the node's (10.1.10.12); the sidecar's own port, not LocalServicePort.
    assert (mesh.address, mesh.port, mesh.health) == ("10.1.10.12", 18080, Health.HEALTHY)
    assert mesh.metadata["consul"]["instance_id"] == "web-sidecar-proxy"
    assert mesh.metadata["consul"]["node"] == "foobar"
    assert endpoints_from_health([_docs_sidecar_entry()]) == ()


def test_sidecar_health_is_the_worst_of_its_checks_alias_included() -> None:
    entry = _docs_sidecar_entry()
    entry["Checks"].append(
        {
            "Node": "foobar",
            "CheckID": "service:web-sidecar-proxy:2",
            "Name": "Connect Sidecar Aliasing web",
            "Status": "critical",
            "ServiceID": "web-sidecar-proxy",
            "ServiceName": "web-sidecar-proxy",
        }
    )
    (mesh,) = split_health([entry]).mesh["web"]
    assert mesh.health is Health.UNHEALTHY


def test_service_address_and_tagged_addresses_apply_to_sidecars_too() -> None:
    entry = _docs_sidecar_entry(
        Address="172.17.0.9",
        TaggedAddresses={"wan": {"address": "198.18.0.9", "port": 443}},
    )
    (local,) = split_health([entry]).mesh["web"]
    assert (local.address, local.port) == ("172.17.0.9", 18080)
    (wan,) = split_health([entry], MappingOptions(prefer_tagged_address="wan")).mesh["web"]
    assert (wan.address, wan.port) == ("198.18.0.9", 443)


@pytest.mark.parametrize("kind", sorted(PROXY_KINDS - {"connect-proxy"}))
def test_gateways_are_neither_endpoints_nor_mesh_endpoints(kind: str) -> None:
    entry = _docs_sidecar_entry(Kind=kind, Service="gw", Proxy={})
    read = split_health([entry])
    assert (read.endpoints, dict(read.mesh), read.proxy_only) == ((), {}, True)


def test_an_application_next_to_its_sidecar_and_connect_native_instances() -> None:
    app = json.loads((SAMPLES / "health-service.json").read_text())[0]
    native = copy.deepcopy(app)
    native["Service"] |= {"ID": "redis-2", "Port": 8001, "Connect": {"Native": True}}
    sidecar = _docs_sidecar_entry(Proxy={**DOCS_PROXY, "DestinationServiceName": "redis"})
    read = split_health([app, native, sidecar])
    assert read.proxy_only is False
    assert [e.port for e in read.endpoints] == [8000, 8001]
    # /v1/health/connect/redis would list the sidecar and the native instance.
    assert [e.port for e in read.mesh["redis"]] == [8001, 18080]


def test_a_proxy_without_a_destination_is_nobody_s_mesh_endpoint() -> None:
    entry = _docs_sidecar_entry(Proxy={"DestinationServiceName": ""})
    assert dict(split_health([entry]).mesh) == {}
    assert split_health([]).proxy_only is None


def test_service_from_health_takes_mesh_endpoints_from_a_connect_response() -> None:
    redis = json.loads((SAMPLES / "health-service.json").read_text())
    connect = [_docs_sidecar_entry(Proxy={**DOCS_PROXY, "DestinationServiceName": "redis"})]
    service = service_from_health("redis", redis, connect_entries=connect)
    assert [e.port for e in service.endpoints] == [8000]
    assert [(e.address, e.port) for e in service.mesh_endpoints] == [("10.1.10.12", 18080)]
    assert service_from_health("web", redis, connect_entries=connect).mesh_endpoints == ()


# --- the double --------------------------------------------------------------------------------


@pytest.fixture
def http(consul_double: ConsulDouble) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=consul_double.url, timeout=10) as client:
        yield client


def _register_web_with_nested_sidecar(http: httpx.Client, **sidecar: Any) -> None:
    body = {
        "ID": "web1",
        "Name": "web",
        "Tags": ["v1"],
        "Port": 8080,
        "Check": {"TTL": "30s", "Status": "passing"},
        "connect": {"sidecar_service": sidecar},  # snake_case, as in agent config files
    }
    resp = http.put("/v1/agent/service/register", json=body)
    assert resp.status_code == 200, resp.text


def test_agent_registration_of_a_connect_proxy_with_kind_and_proxy(http: httpx.Client) -> None:
    assert http.put("/v1/agent/service/register", json={"Name": "web", "Port": 8080}).is_success
    body = {
        "Kind": "connect-proxy",
        "ID": "web-sidecar-proxy",
        "Name": "web-sidecar-proxy",
        "Port": 18080,
        "Proxy": {
            "DestinationServiceName": "web",
            "DestinationServiceID": "web",
            "LocalServiceAddress": "127.0.0.1",
            "LocalServicePort": 8080,
            "Upstreams": [
                {"DestinationName": "db", "LocalBindPort": 9191, "LocalBindAddress": "127.0.0.2"}
            ],
        },
    }
    assert http.put("/v1/agent/service/register", json=body).is_success

    (entry,) = http.get("/v1/health/connect/web").json()
    service = entry["Service"]
    assert (service["Kind"], service["ID"], service["Port"]) == (
        "connect-proxy",
        "web-sidecar-proxy",
        18080,
    )
    assert service["Proxy"] == {
        "DestinationServiceName": "web",
        "DestinationServiceID": "web",
        "LocalServiceAddress": "127.0.0.1",
        "LocalServicePort": 8080,
        "Mode": "",
        "Config": None,
        "Upstreams": [
            {
                "DestinationType": "service",
                "DestinationName": "db",
                "LocalBindAddress": "127.0.0.2",
                "LocalBindPort": 9191,
            }
        ],
    }
    # The application itself is not mesh-capable; its own entry shows no Kind and no Proxy.
    (app,) = http.get("/v1/health/service/web").json()
    assert "Kind" not in app["Service"] and "Proxy" not in app["Service"]
    agent = http.get("/v1/agent/services").json()
    assert agent["web-sidecar-proxy"]["Kind"] == "connect-proxy"
    assert agent["web-sidecar-proxy"]["Proxy"]["DestinationServiceName"] == "web"


def test_catalog_connect_has_the_catalog_shape_with_service_kind_and_proxy(
    http: httpx.Client,
) -> None:
    _register_web_with_nested_sidecar(http)
    (entry,) = http.get("/v1/catalog/connect/web").json()
    (plain,) = http.get("/v1/catalog/service/web").json()
    assert entry.keys() == plain.keys()  # "parameters and response format are the same"
    assert entry["ServiceKind"] == "connect-proxy" and plain["ServiceKind"] == ""
    assert entry["ServiceName"] == "web-sidecar-proxy"
    assert entry["ServiceProxy"]["DestinationServiceName"] == "web"
    assert entry["ServiceProxy"]["DestinationServiceID"] == "web1"
    assert entry["ServiceConnect"] == {"Native": False, "Proxy": None}
    # A typical service keeps the docs' empty ServiceProxy block.
    assert plain["ServiceProxy"]["DestinationServiceName"] == ""
    assert http.get("/v1/catalog/connect/nothing").json() == []


def test_nested_sidecar_service_gets_consul_s_defaults(http: httpx.Client) -> None:
    _register_web_with_nested_sidecar(http)
    (entry,) = http.get("/v1/health/connect/web").json()
    service = entry["Service"]
    assert (service["ID"], service["Service"], service["Port"]) == (
        "web1-sidecar-proxy",
        "web-sidecar-proxy",
        21000,
    )
    assert service["Tags"] == ["v1"]  # the parent's tags
    assert service["Proxy"]["LocalServicePort"] == 8080
    assert service["Proxy"]["LocalServiceAddress"] == "127.0.0.1"
    names = sorted(c["Name"] for c in entry["Checks"] if c["ServiceID"])
    assert names == ["Connect Sidecar Aliasing web1", "Connect Sidecar Listening"]
    assert {c["Status"] for c in entry["Checks"]} == {"passing"}

    # The next sidecar on the agent gets the next port; deregistering a parent takes its
    # nested sidecar with it.
    body = {"ID": "web2", "Name": "web", "Port": 8081, "Connect": {"SidecarService": {}}}
    assert http.put("/v1/agent/service/register", json=body).is_success
    ports = sorted(e["Service"]["Port"] for e in http.get("/v1/health/connect/web").json())
    assert ports == [21000, 21001]
    assert http.put("/v1/agent/service/deregister/web1").is_success
    left = [e["Service"]["ID"] for e in http.get("/v1/health/connect/web").json()]
    assert left == ["web2-sidecar-proxy"]


def test_the_alias_check_follows_the_instance_it_fronts(http: httpx.Client) -> None:
    _register_web_with_nested_sidecar(http)

    def alias_status() -> str:
        (entry,) = http.get("/v1/health/connect/web").json()
        (alias,) = [c for c in entry["Checks"] if c["Name"].startswith("Connect Sidecar Alias")]
        return str(alias["Status"])

    assert http.put("/v1/agent/check/fail/service:web1").is_success
    assert alias_status() == "critical"
    assert http.put("/v1/agent/check/warn/service:web1").is_success
    assert alias_status() == "warning"
    assert http.put("/v1/agent/check/pass/service:web1").is_success
    assert alias_status() == "passing"
    assert http.put("/v1/agent/service/maintenance/web1?enable=true").is_success
    assert alias_status() == "critical"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"Kind": "connect-proxy", "Name": "p", "Port": 1, "Proxy": {}}, "DestinationServiceName"),
        ({"Kind": "connect-proxy", "Name": "p", "Proxy": {"DestinationServiceName": "w"}}, "Port"),
        ({"Kind": "sidecar", "Name": "p", "Port": 1}, "kind"),
        ({"Name": "p", "Port": 1, "Proxy": {"DestinationServiceName": "w"}}, "Proxy"),
        (
            {
                "Kind": "connect-proxy",
                "Name": "p",
                "Port": 1,
                "Proxy": {"DestinationServiceName": "w", "Upstreams": [{"LocalBindPort": 1}]},
            },
            "destination name",
        ),
    ],
)
def test_invalid_proxy_registrations_are_400s(
    http: httpx.Client, body: dict[str, Any], words: str
) -> None:
    resp = http.put("/v1/agent/service/register", json=body)
    assert resp.status_code == 400
    assert words in resp.text
    assert "p" not in http.get("/v1/agent/services").json()


async def test_health_connect_blocks_until_a_mesh_endpoint_of_the_service_changes(
    consul_double: ConsulDouble,
) -> None:
    d = consul_double
    d.register("web", "10.0.0.1", 8080, id="web1")
    d.register("other", "10.0.0.2", 9000, id="other1")
    sidecar = d.register_sidecar("web1", 21000)
    async with httpx.AsyncClient(base_url=d.url, timeout=10) as client:
        first = await client.get("/v1/health/connect/web")
        index = int(first.headers["X-Consul-Index"])
        assert index == d.index()  # the sidecar was the last write
        pending = asyncio.create_task(
            client.get("/v1/health/connect/web", params={"index": index, "wait": "20s"})
        )
        await asyncio.sleep(0.2)  # let it block (nothing to await in the double's API)
        d.set_check("other1", "critical")  # another service: no wake-up
        d.register("web", "10.0.0.3", 8080, id="web2")  # web itself, not a mesh endpoint
        await asyncio.sleep(0.2)
        assert not pending.done()
        d.set_check("web1", "critical")  # the alias check of the sidecar follows
        resp = await asyncio.wait_for(pending, 5)
        assert int(resp.headers["X-Consul-Index"]) > index
        (entry,) = resp.json()
        assert entry["Service"]["ID"] == sidecar
        assert "critical" in {c["Status"] for c in entry["Checks"]}


def test_register_sidecar_helper_matches_the_agent_path(consul_double: ConsulDouble) -> None:
    d = consul_double
    d.register("api", "10.0.0.1", 8080, id="api1", tags=["blue"])
    sid = d.register_sidecar(
        "api1", upstreams=[{"DestinationName": "db", "LocalBindPort": 9191}], status="warning"
    )
    (entry,) = d.connect_health("api")
    assert sid == "api1-sidecar-proxy" == entry["Service"]["ID"]
    assert entry["Service"]["Address"] == "10.0.0.1"
    assert entry["Service"]["Tags"] == ["blue"]
    assert entry["Service"]["Proxy"]["Upstreams"][0]["LocalBindPort"] == 9191
    assert sorted(c["Status"] for c in entry["Checks"]) == ["passing", "passing", "warning"]
    assert d.services()["api-sidecar-proxy"] == ["blue"]


# --- the watcher against the double ----------------------------------------------------------


def _mesh(inventory: Inventory, name: str) -> list[tuple[str, int, Health]]:
    service = inventory.get(name)
    assert service is not None, f"{name} missing from {sorted(inventory.services)}"
    return [(e.address, e.port, e.health) for e in service.mesh_endpoints]


def _api_with_two_sidecars(d: ConsulDouble) -> None:
    d.register("api", "10.0.0.1", 8080, id="api1", node="n1", node_address="10.0.0.1")
    d.register("api", "10.0.0.2", 8080, id="api2", node="n2", node_address="10.0.0.2")
    d.register_sidecar("api1", 21000)
    d.register_sidecar("api2", 21001)


async def test_sidecars_are_the_mesh_endpoints_and_never_services(
    consul_double: ConsulDouble,
) -> None:
    d = consul_double
    _api_with_two_sidecars(d)
    d.register("frontend", "10.0.0.3", 8000, id="fe1")
    gateway = {"Kind": "mesh-gateway", "Name": "gw", "Address": "10.0.0.9", "Port": 8443}
    async with httpx.AsyncClient(base_url=d.url) as client:
        assert (await client.put("/v1/agent/service/register", json=gateway)).is_success
    async with watching(_settings(d)) as w:
        inventory = await w.next()
        assert sorted(inventory.services) == ["api", "frontend"]  # no proxy, no gateway
        assert _mesh(inventory, "api") == [
            ("10.0.0.1", 21000, Health.HEALTHY),
            ("10.0.0.2", 21001, Health.HEALTHY),
        ]
        assert [e.port for e in inventory.services["api"].endpoints] == [8080, 8080]
        assert _mesh(inventory, "frontend") == []
        mesh = inventory.services["api"].mesh_endpoints[0]
        assert mesh.metadata["consul"]["instance_id"] == "api1-sidecar-proxy"
        # Found by the reads the watcher makes anyway: no /v1/health/connect requests.
        assert d.request_count("/v1/health/connect") == 0


async def test_sidecar_deregistering_and_going_critical_leave_within_a_second(
    consul_double: ConsulDouble,
) -> None:
    d = consul_double
    _api_with_two_sidecars(d)
    async with watching(_settings(d)) as w:
        await w.next()

        d.deregister("api2-sidecar-proxy")
        inv, _ = await w.until(lambda i: len(i.services["api"].mesh_endpoints) == 1, timeout=1.0)
        assert _mesh(inv, "api") == [("10.0.0.1", 21000, Health.HEALTHY)]
        assert len(inv.services["api"].endpoints) == 2  # the application instance stays

        d.set_check("api1", "critical")  # the application: its sidecar's alias check follows
        inv, _ = await w.until(
            lambda i: _mesh(i, "api") == [("10.0.0.1", 21000, Health.UNHEALTHY)], timeout=1.0
        )
        d.set_check("api1", "passing")
        await w.until(
            lambda i: _mesh(i, "api") == [("10.0.0.1", 21000, Health.HEALTHY)], timeout=1.0
        )

        d.set_check("service:api1-sidecar-proxy:1", "critical")  # the sidecar's own check
        await w.until(
            lambda i: _mesh(i, "api") == [("10.0.0.1", 21000, Health.UNHEALTHY)], timeout=1.0
        )

        d.register_sidecar("api2", 21001)  # back again
        inv, _ = await w.until(lambda i: len(i.services["api"].mesh_endpoints) == 2, timeout=1.0)
        assert "api-sidecar-proxy" not in inv.services

        d.deregister("api1-sidecar-proxy")
        d.deregister("api2-sidecar-proxy")  # the proxy name leaves the catalog
        inv, _ = await w.until(lambda i: _mesh(i, "api") == [], timeout=1.0)
        assert sorted(inv.services) == ["api"]


async def test_node_failure_reaches_the_sidecars_on_it(consul_double: ConsulDouble) -> None:
    d = consul_double
    _api_with_two_sidecars(d)
    async with watching(_settings(d)) as w:
        await w.next()
        d.set_node_health("n2", "critical")
        inv, _ = await w.until(
            lambda i: Health.UNHEALTHY in {e.health for e in i.services["api"].mesh_endpoints},
            timeout=1.0,
        )
        assert _mesh(inv, "api")[1] == ("10.0.0.2", 21001, Health.UNHEALTHY)


async def test_an_outage_keeps_the_last_good_mesh_endpoints(consul_double: ConsulDouble) -> None:
    d = consul_double
    _api_with_two_sidecars(d)
    async with watching(_settings(d)) as w:
        good = await w.next()
        d.fail(500)
        d.deregister("api2-sidecar-proxy")  # wakes the watches into the failure
        await w.status_until(lambda s: s.errors >= 3)
        assert w.published.empty()  # nothing lost meanwhile
        d.heal()
        inv, _ = await w.until(lambda i: len(i.services["api"].mesh_endpoints) == 1)
        assert inv.services["api"].mesh_endpoints[0] == good.services["api"].mesh_endpoints[0]


async def test_a_sidecar_of_a_service_that_is_not_served_is_dropped(
    consul_double: ConsulDouble,
) -> None:
    d = consul_double
    _api_with_two_sidecars(d)
    d.register("web", "10.0.0.5", 80, id="web1")
    d.register_sidecar("web1", 21005)
    async with watching(_settings(d, include=["api*"])) as w:
        inventory = await w.next()
        assert sorted(inventory.services) == ["api"]
        assert len(_mesh(inventory, "api")) == 2


def test_agent_node_hosts_agent_registrations(http: httpx.Client) -> None:
    _register_web_with_nested_sidecar(http)
    (entry,) = http.get("/v1/health/connect/web").json()
    assert entry["Node"]["Node"] == AGENT_NODE
