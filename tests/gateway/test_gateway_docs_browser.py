"""/docs in a real browser with no network beyond 127.0.0.1: Swagger UI renders the operations
from assets the gateway serves itself (Debian's headless chromium, driven by Playwright)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import servers

from emergify_gateway.__main__ import uvicorn_options
from emergify_gateway.config import Settings
from emergify_gateway.main import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_docs_render_the_operations_offline(make_settings: Callable[..., Settings]) -> None:
    from playwright.sync_api import Route, expect, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("chromium is missing: apt-get install -y chromium")
    settings = make_settings()
    options = uvicorn_options(settings)
    options.pop("host"), options.pop("port")
    blocked: list[str] = []
    violations: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:  # an air-gapped machine: nothing else answers
            blocked.append(route.request.url)
            route.abort()

    with servers.serving() as serve, sync_playwright() as p:
        base = serve(create_app(settings), **options).url
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_loopback)
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto(f"{base}/docs")
            operations = page.locator(".opblock-summary-path")
            expect(operations.first).to_be_visible(timeout=60_000)
            paths = {text.strip() for text in operations.all_inner_texts()}
            assert "/api/v1/recommendations" in paths and "/api/v1/songs/upload" in paths
            # Authorizing does not store the key in the browser.
            assert page.evaluate("() => Object.keys(window.localStorage)") == []
        finally:
            browser.close()
    assert blocked == []
    assert violations == []
