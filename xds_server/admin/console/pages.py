"""The console's pages and the HTML shell each one is served in (pure: no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class Page:
    slug: str
    title: str
    #: One line under the heading: what the page answers.
    lead: str


PAGES: Final = (
    Page("fleet", "Fleet", "Every proxy and what it holds: SYNCED, STALE or NACKED per type."),
    Page("services", "Services", "The registry: instances, health, zone, weight, subsets, routes."),
    Page("config", "Config", "Every resource by kind; edit and apply with a dry-run preview."),
    Page("history", "History", "Revisions, the diff between two, rollback with a preview."),
    Page("mesh", "Mesh", "The CA, the identities it issued, and who may call whom."),
)
PAGES_BY_SLUG: Final = {page.slug: page for page in PAGES}

#: Same origin only: no CDN, no inline script or style, no framing.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def _nav(current: Page) -> str:
    links = []
    for page in PAGES:
        attrs = ' aria-current="page"' if page is current else ""
        links.append(f'<li><a href="/ui/{page.slug}"{attrs}>{escape(page.title)}</a></li>')
    return "\n        ".join(links)


def _data_block(data: Mapping[str, Any]) -> str:
    """Facts for the page's script, as inert JSON (not executed, so the CSP allows it)."""
    text = json.dumps(data, sort_keys=True).replace("<", "\\u003c")
    return f'<script type="application/json" id="page-data">{text}</script>'


def render_page(page: Page, asset_version: str, data: Mapping[str, Any]) -> str:
    """The shell of ``page``: navigation, heading, the token dialog and the page's script.

    ``asset_version`` (a hash of the assets) busts browser caches after an upgrade; ``data``
    is what the scripts need to know of the server that is not config (e.g. the kinds)."""
    v = escape(asset_version)
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{escape(page.title)} · xds-server</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/ui/static/console.css?v={v}">
  <script src="/ui/static/core.js?v={v}" defer></script>
  <script src="/ui/static/{page.slug}.js?v={v}" defer></script>
  {_data_block(data)}
</head>
<body data-page="{page.slug}">
  <a class="skip" href="#main">Skip to content</a>
  <header class="top">
    <span class="brand">xds-server</span>
    <nav aria-label="Console pages">
      <ul>
        {_nav(page)}
      </ul>
    </nav>
    <span class="who" id="who" role="status" aria-live="polite"></span>
    <button type="button" id="logout" class="link" hidden>Forget token</button>
  </header>
  <main id="main" tabindex="-1">
    <h1>{escape(page.title)}</h1>
    <p class="lead">{escape(page.lead)}</p>
    <div id="notice" role="alert" class="notice" hidden></div>
    <form id="login" class="login" hidden>
      <label for="token">Admin API token</label>
      <input id="token" name="token" type="password" autocomplete="off" required>
      <button type="submit">Sign in</button>
      <p class="hint">Kept in this tab only (sessionStorage); sent as
        <code>Authorization: Bearer</code> to this server's API.</p>
    </form>
    <div id="content" hidden></div>
  </main>
</body>
</html>
"""
