"""Driving the web console in a real browser: Debian's Chromium through Playwright.

- ``launch_chromium``: the browser at ``/usr/bin/chromium`` (never Playwright's download);
  the tests skip, saying why, only where it is missing or cannot start.
- ``ConsolePage``: one tab on the console that fails the test on any request leaving for
  another host, on any JavaScript error, and that can run axe-core on what it shows.
- ``axe_source``: axe-core from npm (``npm pack``, pinned), cached between runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest

CHROMIUM: Final = Path(os.environ.get("XDS_TEST_CHROMIUM", "/usr/bin/chromium"))
AXE_VERSION: Final = "4.11.0"
#: Hosts a console page may talk to: its own server, nothing else.
LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
#: URL schemes that never leave the browser.
INERT_SCHEMES: Final = frozenset({"data", "about", "blob"})


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``); skips only if it truly cannot run."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra has it
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                headless=True,
                args=["--no-sandbox", "--disable-dev-shm-usage"],
            )
        except Exception as error:
            pytest.skip(f"Chromium at {CHROMIUM} does not start here: {error}")
        try:
            yield browser
        finally:
            browser.close()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xds-server-tests"


def axe_source() -> str:
    """``axe.min.js`` of axe-core ``AXE_VERSION``, fetched once with ``npm pack`` (npm checks
    the tarball against the registry's integrity hash) and cached."""
    target = _cache_dir() / f"axe-core-{AXE_VERSION}" / "axe.min.js"
    if not target.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed for the accessibility check (.ci/run installs it)")
        work = target.parent
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "pack", f"axe-core@{AXE_VERSION}", "--silent"],
            cwd=work,
            check=True,
            capture_output=True,
            timeout=180,
        )
        with tarfile.open(work / f"axe-core-{AXE_VERSION}.tgz") as archive:
            member = archive.extractfile("package/axe.min.js")
            assert member is not None
            target.write_bytes(member.read())
    text = target.read_text()
    print(f"axe-core {AXE_VERSION}: sha256 {hashlib.sha256(text.encode()).hexdigest()}")
    return text


class ConsolePage:
    """A browser tab on the console at ``base`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, browser: Any, base: str, shots: Path) -> None:
        self.base = base
        self.shots = shots
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.page.route("**/*", self._guard)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console",
            self._console,
        )

    def _console(self, message: Any) -> None:
        # An HTTP error answer (a 403 the page shows, a 404 it expects) is logged by the
        # browser as "Failed to load resource"; the page handles those. Anything else is not.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _guard(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in INERT_SCHEMES or (parts.hostname or "") in LOCAL_HOSTS:
            route.continue_()
            return
        self.foreign.append(url)
        route.abort()

    def open(self, page: str, token: str | None = None) -> Any:
        """Open ``/ui/<page>``; with ``token``, sign in when the console asks for one. Waits
        until the page says it is ready (its data loaded)."""
        self.page.goto(f"{self.base}/ui/{page}")
        if token is not None:
            self.page.wait_for_selector("#login:not([hidden]), body[data-ready]")
            if self.page.locator("#login").is_visible():
                self.page.fill("#token", token)
                self.page.click("#login button[type=submit]")
        self.page.wait_for_selector("body[data-ready]")
        return self.page

    def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def serious_violations(self, axe: str) -> list[dict[str, Any]]:
        """axe-core's serious and critical violations on what the page shows now."""
        # Evaluated through the DevTools protocol: the console's CSP (rightly) refuses an
        # inline script tag.
        self.page.evaluate(f"() => {{ {axe}\n }}")
        self.page.wait_for_function("() => typeof window.axe !== 'undefined'")
        result: dict[str, Any] = self.page.evaluate(
            "async () => await axe.run(document, {resultTypes: ['violations']})"
        )
        return [
            {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]

    def assert_clean(self) -> None:
        """No request left for another host and no script failed."""
        assert self.foreign == [], f"requests to other hosts: {self.foreign}"
        assert self.errors == [], f"errors in the page: {self.errors}"

    def close(self) -> None:
        self.context.close()
