"""The API against its own contract: schemathesis generates requests from
``api/openapi.json`` and checks every answer is no 5xx, a documented status with a
documented content type, and a body of the documented shape.

The app runs in process, in one event loop (a blocking portal) shared by every example, so
the store's state builds up across examples as it would in use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.unit.admin_harness import ROOT, example, fake_preview, inventory
from xds_server.admin.app import create_admin_app
from xds_server.admin.context import AdminContext
from xds_server.store import MemoryStore

SCHEMA = schemathesis.openapi.from_path(ROOT / "api" / "openapi.json")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
BASE_URL = "http://admin"


class LiveApi:
    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self.portal = portal
        self.client = client

    def send(self, kwargs: dict[str, Any]) -> httpx.Response:
        """A request built by schemathesis (``requests`` keyword arguments) sent with httpx."""
        kwargs = dict(kwargs)
        body = kwargs.pop("data", None)
        if body is not None:
            kwargs["content"] = body.encode() if isinstance(body, str) else body
        kwargs.pop("cookies", None)  # the API uses none
        kwargs.pop("timeout", None)
        kwargs.pop("verify", None)
        kwargs.pop("allow_redirects", None)
        return self.portal.call(partial(self.client.request, **kwargs))


@pytest.fixture(scope="module")
def live_api() -> Iterator[LiveApi]:
    with start_blocking_portal() as portal:
        store = MemoryStore()
        portal.call(store.open)
        app = create_admin_app(AdminContext(store=store, inventory=inventory, preview=fake_preview))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
        live = LiveApi(portal, client)
        # Some documents to find, replace and delete, so reads do not all answer 404.
        documents = [example(f) for f in ("listener.yaml", "retry-policy.yaml", "route.yaml")]
        assert live.send({"method": "POST", "url": "/v1/apply", "json": documents}).is_success
        try:
            yield live
        finally:
            portal.call(client.aclose)
            portal.call(store.close)


@SCHEMA.parametrize()
@settings(
    # 30 examples per operation cost ~4 of make test's 16 minutes; 10 still send every
    # operation its edge cases (hypothesis tries the boundaries first). XDS_TEST_API_EXAMPLES
    # raises it for a deeper run.
    max_examples=int(os.environ.get("XDS_TEST_API_EXAMPLES", "10")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_keeps_its_contract(case: schemathesis.Case[Any], live_api: LiveApi) -> None:
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    response = live_api.send(kwargs)
    case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)
