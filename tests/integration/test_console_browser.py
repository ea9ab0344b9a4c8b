"""The web console at ``/ui/`` in a real browser (Playwright driving Debian's Chromium).

One control plane (in process, so that the test can publish a snapshot Envoy must reject, as
no API allows), with admin tokens, a real Envoy and two local upstreams, is shared by the
tests of this module. Every page opened fails its test on a request to another host or a
script error; every page is screenshotted under the test's temporary folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app_thread import ThreadedApp
from tests.support.console import ConsolePage, axe_source, launch_chromium
from tests.support.envoy import Envoy, bootstrap, free_port, http_get, running_envoy, wait_for
from tests.support.upstream import upstreams
from xds_server.admin.middleware.auth import hash_token
from xds_server.cache.snapshot import Snapshot
from xds_server.cache.types import CLUSTER
from xds_server.settings import Address, Settings
from xds_server.settings.security import SecuritySettings

pytestmark = pytest.mark.envoy

WRITE_TOKEN = "console-write-token"
READ_TOKEN = "console-read-token"
PAGES = ("fleet", "services", "config", "history", "mesh")


@dataclass
class Stack:
    server: ThreadedApp
    envoy: Envoy
    port: int  # Envoy's listener

    @property
    def admin(self) -> str:
        return self.server.admin

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
        return httpx.request(method, self.admin + path, headers=headers, timeout=10, **kwargs)

    def put(self, path: str, document: dict[str, Any]) -> dict[str, Any]:
        answer = self.api("PUT", path, json=document)
        assert answer.status_code in (200, 201), answer.text
        body: dict[str, Any] = answer.json()
        return body

    def proxy(self, node_id: str) -> dict[str, Any] | None:
        answer = self.api("GET", f"/v1/proxies/{node_id}")
        if answer.status_code == 404:
            return None
        found: dict[str, Any] = answer.json()
        return found

    def routed_to(self) -> str:
        return http_get(self.port, host="shop.example.com")[1]


def route_to(service: str) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": "web",
        "spec": {
            "listeners": ["public"],
            "hostnames": ["shop.example.com"],
            "rules": [{"matches": [{"path": {"prefix": "/"}}], "backends": [{"service": service}]}],
        },
    }


def synced(stack: Stack) -> dict[str, Any] | None:
    found = stack.proxy("edge-1")
    return found if found is not None and found["status"] == "SYNCED" else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("console")
    tokens = folder / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: operator, token_sha256: {hash_token(WRITE_TOKEN)}, role: write}}\n"
        f"  - {{name: viewer, token_sha256: {hash_token(READ_TOKEN)}, role: read}}\n"
    )
    with upstreams("one", "two") as (one, two):
        registry = folder / "registry.yaml"
        registry.write_text(
            "services:\n"
            f"  a:\n    endpoints:\n      - {{address: 127.0.0.1, port: {one.port}, zone: z1}}\n"
            f"  b:\n    endpoints:\n      - {{address: 127.0.0.1, port: {two.port}, weight: 3,"
            " health: degraded, zone: z2, metadata: {version: v2}}\n"
        )
        settings = Settings(
            ads_listen=Address("127.0.0.1", 0),
            admin_listen=Address("127.0.0.1", 0),
            registry=f"static:{registry}",
            store=f"sqlite:{folder / 'config.db'}",
            debounce=0.02,
            max_delay=0.2,
            security=SecuritySettings(admin_tokens=str(tokens)),
        )
        server = ThreadedApp(settings).start()
        try:
            port = free_port()
            config = bootstrap(server.ads_port, node_id="edge-1", group="edge")
            with running_envoy(config) as envoy:
                stack = Stack(server, envoy, port)
                listener = {
                    "kind": "Listener",
                    "name": "public",
                    "spec": {"address": "127.0.0.1", "port": port, "access_log": False},
                }
                stack.put("/v1/listeners/public", listener)
                stack.put("/v1/routes/web", route_to("a"))
                stack.put("/v1/mesh", {"kind": "Mesh", "spec": {"trust_domain": "shop.local"}})
                allow = {"source": "a", "destination": "b", "action": "allow"}
                stack.put(
                    "/v1/intentions/a-to-b", {"kind": "Intention", "name": "a-to-b", "spec": allow}
                )
                wait_for(lambda: stack.routed_to() == "one", 20, "routed to a", envoy.check_alive)
                yield stack
        finally:
            server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def console(browser: Any, stack: Stack, tmp_path: Path) -> Iterator[ConsolePage]:
    tab = ConsolePage(browser, stack.admin, tmp_path / "screenshots")
    try:
        yield tab
        tab.assert_clean()
    finally:
        tab.close()


def test_fleet_lists_the_envoy_synced_then_nacked_live_and_synced_again(
    stack: Stack, console: ConsolePage
) -> None:
    from playwright.sync_api import expect

    wait_for(lambda: synced(stack), 20, "edge-1 SYNCED", stack.envoy.check_alive)
    page = console.open("fleet", WRITE_TOKEN)
    row = page.locator('tr[data-node="edge-1"]')
    expect(row).to_have_attribute("data-status", "SYNCED")
    expect(row.locator("td").nth(1)).to_have_text("edge")
    expect(row).to_contain_text("1.40.")
    expect(page.locator("#fleet-live")).to_have_text("live")
    console.screenshot("fleet-synced")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate("() => { window.__sameDocument = true; }")

    good = stack.server.call(stack.server.app.cache.snapshot_for, "edge")
    poisoned = stack.server.call(_poisoned, stack.server)
    stack.server.call(stack.server.app.cache.set_snapshots, poisoned, check=False)
    nacked = wait_for(
        lambda: (p := stack.proxy("edge-1")) and p["types"]["CDS"]["status"] == "NACKED" and p,
        20,
        "the NACK recorded by the server",
        stack.envoy.check_alive,
    )
    message = nacked["types"]["CDS"]["last_nack"]["message"]
    # From the server knowing it to the page showing it: at most 2 s, without a reload.
    expect(row).to_have_attribute("data-status", "NACKED", timeout=2000)
    expect(row).to_have_class("nacked")
    expect(row.locator('td[data-type="CDS"]')).to_have_text("NACKED")
    expect(row.locator("td.nack")).to_have_text(f"CDS: {message}")
    assert "connect_timeout" in message.lower() or "ConnectTimeout" in message
    # The row is red.
    background = row.evaluate("r => getComputedStyle(r).backgroundColor")
    assert background == "rgb(253, 226, 226)", background
    console.screenshot("fleet-nacked")
    # Filtering: the NACKED filter keeps it, SYNCED hides it; a search for another name too.
    page.select_option("#fleet-status", "NACKED")
    expect(row).to_be_visible()
    page.select_option("#fleet-status", "SYNCED")
    expect(row).to_be_hidden()
    page.select_option("#fleet-status", "")
    page.fill("#fleet-search", "nobody")
    expect(row).to_be_hidden()
    page.fill("#fleet-search", "edge")
    expect(row).to_be_visible()

    stack.server.call(stack.server.app.cache.set_snapshots, good)
    wait_for(lambda: synced(stack), 20, "edge-1 SYNCED again", stack.envoy.check_alive)
    expect(row).to_have_attribute("data-status", "SYNCED", timeout=2000)
    expect(row).not_to_have_class("nacked")
    assert page.evaluate("() => window.__sameDocument === true")
    assert navigations == []


def test_config_edit_history_diff_and_rollback_change_what_envoy_routes_to(
    stack: Stack, console: ConsolePage
) -> None:
    from playwright.sync_api import expect

    stack.put("/v1/routes/web", route_to("a"))
    wait_for(lambda: stack.routed_to() == "one", 20, "Envoy routes to a", stack.envoy.check_alive)
    before = int(stack.api("GET", "/v1/revision").json()["revision"])

    # Config: edit the route to send to b; Apply only after a preview of the same text.
    page = console.open("config?kind=routes", WRITE_TOKEN)
    page.click('details[data-name="web"] summary')
    page.click('details[data-name="web"] button')
    editor = page.locator("#config-editor")
    text = editor.input_value()
    assert "service: a" in text, text
    editor.fill(text.replace("service: a", "service: b"))
    expect(page.locator("#config-apply")).to_be_disabled()
    page.click("#config-preview")
    preview = page.locator("#config-result .preview")
    expect(preview).to_contain_text("Preview (dry run)")
    expect(preview).to_contain_text("Route/web")
    expect(preview.locator(".envoy-changes")).to_contain_text("Cluster/b")
    console.screenshot("config-preview")
    assert stack.routed_to() == "one"  # a preview changes nothing
    page.click("#config-apply")
    expect(page.locator("#config-result")).to_contain_text("Applied: revision")
    wait_for(lambda: stack.routed_to() == "two", 20, "Envoy routes to b", stack.envoy.check_alive)
    after = int(stack.api("GET", "/v1/revision").json()["revision"])
    assert after == before + 1
    history = stack.api("GET", f"/v1/history/{after}").json()
    assert history["actor"] == "operator"

    # History: the diff between the two revisions shows the changed field.
    page = console.open("history", WRITE_TOKEN)
    page.select_option("#diff-from", str(before))
    page.select_option("#diff-to", str(after))
    page.click("#diff-show")
    diff = page.locator('pre.diff[data-doc="Route/web"]')
    expect(diff.locator(".del")).to_contain_text("service: a")
    expect(diff.locator(".add")).to_contain_text("service: b")
    console.screenshot("history-diff")

    # Rollback to `before`: preview first (nothing changes), then confirm.
    page.select_option("#rollback-revision", str(before))
    expect(page.locator("#rollback-confirm")).to_be_disabled()
    page.click("#rollback-preview")
    result = page.locator("#rollback-result .preview")
    expect(result).to_contain_text("Preview (dry run)")
    expect(result).to_contain_text("Route/web")
    expect(result.locator(".envoy-changes")).to_contain_text("RouteConfiguration")
    console.screenshot("history-rollback-preview")
    assert stack.routed_to() == "two"
    page.click("#rollback-confirm")
    expect(page.locator("#rollback-result")).to_contain_text(f"Rolled back to r{before}")
    wait_for(lambda: stack.routed_to() == "one", 20, "Envoy routes to a", stack.envoy.check_alive)


def test_a_read_token_sees_everything_but_cannot_write_and_no_token_is_asked_for(
    stack: Stack, console: ConsolePage
) -> None:
    from playwright.sync_api import expect

    # No token: the console asks for one (and shows no data).
    page = console.page
    page.goto(f"{stack.admin}/ui/config")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#token")).to_be_focused()
    expect(page.locator("#content")).to_be_hidden()
    console.screenshot("token-prompt")

    page = console.open("config?kind=routes", READ_TOKEN)
    expect(page.locator("#who")).to_contain_text("read-only")
    expect(page.locator('details[data-name="web"]')).to_be_visible()  # reads work
    for control in ("#config-new", "#config-preview", "#config-apply"):
        expect(page.locator(control)).to_be_disabled()
    expect(page.locator('details[data-name="web"] button')).to_be_disabled()
    # The token is kept for this tab only.
    stored = page.evaluate(
        "() => [Object.values(sessionStorage), Object.values(localStorage), document.cookie]"
    )
    assert stored == [[READ_TOKEN], [], ""]
    # A forced write (the disabled button enabled by hand) gets the API's 403.
    page.fill("#config-editor", "kind: Route\nname: web\nspec: {}\n")
    page.evaluate(
        """() => { const b = document.getElementById('config-preview');
                   b.disabled = false; b.removeAttribute('aria-disabled'); }"""
    )
    page.click("#config-preview")
    expect(page.locator("#config-result .error")).to_contain_text("403")
    status = page.evaluate(
        """async () => (await fetch('/v1/rollback', {method: 'POST',
             headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('xds-server.token'),
                       'Content-Type': 'application/json'},
             body: JSON.stringify({revision: 1})})).status"""
    )
    assert status == 403
    page = console.open("history", READ_TOKEN)
    expect(page.locator("#rollback-preview")).to_be_disabled()
    expect(page.locator("#rollback-confirm")).to_be_disabled()
    console.screenshot("history-read-only")


def test_every_page_loads_only_from_its_server_passes_axe_and_is_screenshotted(
    stack: Stack, console: ConsolePage, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    axe = axe_source()
    for name in PAGES:
        page = console.open(name, WRITE_TOKEN)
        expect(page.locator("nav a[aria-current=page]")).to_have_attribute("href", f"/ui/{name}")
        violations = console.serious_violations(axe)
        assert violations == [], f"{name}: {violations}"
        shot = console.screenshot(name)
        assert shot.stat().st_size > 10_000
    # What each page shows (a glance at its data, read through the API).
    page = console.open("services", WRITE_TOKEN)
    card = page.locator('section[data-service="b"]')
    expect(card).to_contain_text("degraded")
    expect(card).to_contain_text("z2")
    expect(card).to_contain_text('{"version":"v2"}')
    expect(page.locator('section[data-service="a"] .routes')).to_contain_text("Route/web")
    page = console.open("mesh", WRITE_TOKEN)
    expect(page.locator("#mesh-intentions")).to_contain_text("allow")
    expect(page.locator("main")).to_contain_text("shop.local")
    # Keyboard: the skip link is the first stop and leads to the content.
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    # Small screens: nothing overflows the viewport sideways.
    page.set_viewport_size({"width": 390, "height": 800})
    page = console.open("fleet", WRITE_TOKEN)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width
    console.screenshot("fleet-narrow")
    print("screenshots:", sorted(p.name for p in (tmp_path / "screenshots").iterdir()))


def _poisoned(server: ThreadedApp) -> Snapshot:
    """The edge group's snapshot with every cluster's connect_timeout 0 (Envoy requires > 0):
    only CDS is rejected."""
    messages = []
    for type_url, by_name in server.app.cache.snapshot_for("edge").messages.items():
        for message in by_name.values():
            copy = type(message)()
            copy.CopyFrom(message)
            if type_url == CLUSTER:
                copy.ClearField("connect_timeout")
                copy.connect_timeout.SetInParent()
            messages.append(copy)
    return Snapshot.build(messages)


def test_pages_need_no_token_but_the_api_still_does_and_nothing_may_load_elsewhere(
    stack: Stack,
) -> None:
    for name in PAGES:
        answer = httpx.get(f"{stack.admin}/ui/{name}", timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "http://" not in answer.text.replace(stack.admin, "")
        assert "https://" not in answer.text
    assert httpx.get(f"{stack.admin}/ui/", timeout=5).headers["location"] == "/ui/fleet"
    assert httpx.get(f"{stack.admin}/ui/nope", timeout=5).status_code == 404
    assert httpx.get(f"{stack.admin}/ui/static/../app.py", timeout=5).status_code == 404
    script = httpx.get(f"{stack.admin}/ui/static/core.js", timeout=5)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    # The data is the API's: without a token, 401 as before.
    assert httpx.get(f"{stack.admin}/v1/services", timeout=5).status_code == 401
    assert httpx.get(f"{stack.admin}/v1/proxies", timeout=5).status_code == 401
    services = stack.api("GET", "/v1/services").json()
    assert services["synced"] is True
    b = next(s for s in services["items"] if s["name"] == "b")
    assert b["endpoints"][0]["health"] == "degraded" and b["endpoints"][0]["weight"] == 3
    assert b["endpoints"][0]["zone"] == "z2"
