"""The dashboard in a real browser (Debian's headless chromium, driven by Playwright) against
the whole stack as `make up` starts it — broker, Spark, every service, the Spotify sandbox and
the dashboard — on free ports in a temporary folder.

A listener signs in with Spotify (the sandbox's consent page), picks a random liked song,
gets recommendations, sees the plots, dislikes a song (it leaves the list), saves the playlist
and sees its link. Screenshots of the
results page go to test-artifacts/ (laptop width and 390 px phone width).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from testkit import wait_for

from emergify_cli.stack import Stack, free_port_env, services_for

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "every_fresh_find.csv"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STEP_TIMEOUT_MS = 60_000


def _stack_env(admin_key: str, workdir: Path) -> dict[str, str]:
    env = free_port_env()
    gateway = env["EMERGIFY_GATEWAY_URL"]
    callback = f"{gateway}/api/v1/spotify/callback"
    env.update(
        {
            "EMERGIFY_DATABASE_URL": f"sqlite:///{workdir / 'var' / 'emergify.db'}",
            "EMERGIFY_ADMIN_API_KEY": admin_key,
            "EMERGIFY_LOG_LEVEL": "WARNING",
            "EMERGIFY_TRIGGER_INTERVAL_SECONDS": "0.5",
            "EMERGIFY_SPOTIFY_SANDBOX": "true",
            "EMERGIFY_SPOTIFY_REDIRECT_URI": callback,
            "EMERGIFY_SPOTIFY_SANDBOX_REDIRECT_URIS": json.dumps([callback]),
            "EMERGIFY_SPOTIFY_SANDBOX_CATALOG_CSV": str(SAMPLE),
            "EMERGIFY_SESSION_SECRET": secrets.token_urlsafe(32),
            "EMERGIFY_TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        }
    )
    return env


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    """Debian's chromium; the test fails (never skips) when it is missing."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail(
            "Debian's chromium is not installed (/usr/bin/chromium): `make test` installs it "
            "(deploy/bootstrap.sh runs `apt-get install -y chromium` as root)"
        )
    return CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium") or "")


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Every service with the Spotify sandbox and the dashboard, the sample catalog loaded
    and a first model trained."""
    workdir = tmp_path_factory.mktemp("dashboard-e2e")
    admin_key = secrets.token_urlsafe(24)
    log: list[str] = []
    stack = Stack(
        env=_stack_env(admin_key, workdir),
        workdir=workdir,
        services=services_for(spotify_sandbox=True),
        sink=log.append,
    )
    try:
        stack.start()
        with httpx.Client(
            base_url=stack.url("api-gateway"), headers={"X-API-Key": admin_key}, timeout=120
        ) as api:
            with SAMPLE.open("rb") as f:
                r = api.post("/api/v1/songs/upload", files={"file": (SAMPLE.name, f, "text/csv")})
            assert r.status_code == 202, r.text
            wait_for(
                lambda: (
                    (c := api.get("/api/v1/catalog").json())["songs"] >= 4470
                    and c.get("model_version") is not None
                ),
                timeout=360,
                what="the sample catalog materialised and a first model",
            )
        yield stack
    finally:
        stack.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "dashboard-e2e-stack.log").write_text("\n".join(log))


def test_sign_in_pick_recommend_plot_and_save_in_a_real_browser(
    running_stack: Stack, chromium_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=STEP_TIMEOUT_MS)  # the first run imports pandas, altair...
    dashboard = running_stack.url("dashboard")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.goto(dashboard)

            # Sign in with Spotify: the button leads to the gateway's login, the sandbox's
            # consent page, and back to the dashboard with the session cookie.
            sign_in = page.get_by_role("link", name="Sign in with Spotify").first
            expect(sign_in).to_be_visible()
            login_url = sign_in.get_attribute("href")
            assert login_url == f"{running_stack.url('api-gateway')}/api/v1/spotify/login"
            page.goto(login_url)
            page.locator("#agree").click()
            page.wait_for_url(re.compile(re.escape(dashboard) + r"/?(\?.*)?$"))
            expect(page.get_by_text("signed in with Spotify")).to_be_visible()
            expect(page.get_by_text("Your top 10 artists")).to_be_visible()

            # Pick a favourite: a random liked song the catalog knows.
            page.get_by_role("button", name="Pick a random liked song").click()
            expect(page.get_by_text("Your favourites (1)")).to_be_visible()

            # Get recommendations: the table and both plots appear.
            page.get_by_role("button", name="Get recommendations").click()
            expect(page.get_by_text("Your emerging playlist")).to_be_visible()
            expect(page.locator("[data-testid='stDataFrame']").first).to_be_visible()
            charts = page.locator(".vega-embed")
            expect(charts).to_have_count(2)
            expect(charts.first.locator("canvas, svg").first).to_be_visible()

            # Dislike the first song: it leaves the list at once, and the page says so.
            page.get_by_role("button", name="Dislike").first.click()
            expect(page.get_by_text("removed from this list")).to_be_visible()

            # Save to Spotify and see the link.
            name = page.get_by_label("Playlist name")
            name.fill("Emergify browser test")
            name.press("Enter")
            page.get_by_role("button", name="Save to Spotify").click()
            expect(page.get_by_text("Saved “Emergify browser test”")).to_be_visible()
            link = page.get_by_role("link", name="Open the playlist in Spotify")
            expect(link).to_be_visible()
            assert "/playlist/" in (link.get_attribute("href") or "")

            # Screenshots of the results: laptop width, then phone width (390 px). Streamlit
            # scrolls inside its own container, so a tall viewport shows the whole page.
            page.set_viewport_size({"width": 1280, "height": 3000})
            page.evaluate(  # back to the top of whichever container scrolled
                "() => document.querySelectorAll('*').forEach(e => { e.scrollTop = 0; })"
            )
            page.wait_for_timeout(1500)  # let the charts re-lay out at the new size
            page.screenshot(path=str(ARTIFACTS / "dashboard-results.png"))
            page.set_viewport_size({"width": 390, "height": 4600})
            page.wait_for_timeout(1500)
            expect(page.get_by_text("Saved “Emergify browser test”")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"))
        finally:
            browser.close()
