"""The Spotify flow end to end, on real HTTP: the Spotify sandbox, the spotify-gateway (tokens
in a real PostgreSQL database), a real recommender over a SQLite catalog seeded from the sample
CSV, and the real api-gateway in front — each served by uvicorn on a free port.

Test modules cannot import this file (importlib mode): they get everything through the
``stack`` fixture. Tests act like a browser: an httpx client with a cookie jar that follows the
sign-in redirects by hand, always talking to the api-gateway (never to the spotify-gateway
directly).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from catalog_fixtures import seed_catalog
from servers import ServedApp
from spotify_stack import DASHBOARD_URL, run_spotify_stack, sign_in
from testkit import drop_pg_database, new_pg_database

from emergify_cli.broker import EmbeddedBroker

ADMIN_KEY = "spotify-test-admin-key-0123456789abcdef"
SESSION_SECRET = "spotify-test-session-secret-0123456789abcdef"


@dataclass
class Stack:
    """The running services and what tests need to know about them."""

    sandbox: ServedApp
    spotify: ServedApp
    recommender: ServedApp
    gateway: ServedApp
    spotify_db_url: str
    catalog_ids: list[str]
    admin_key: str = ADMIN_KEY
    broker: str | None = None  # bootstrap servers, when the stack has a broker
    dashboard: str = DASHBOARD_URL

    def browser(self) -> httpx.Client:
        """A fresh 'browser' on the api-gateway: a cookie jar, redirects followed by hand."""
        return httpx.Client(base_url=self.gateway.url, follow_redirects=False, timeout=30)

    def sandbox_api(self) -> httpx.Client:
        return httpx.Client(base_url=self.sandbox.url, timeout=10)

    def sign_in(self, browser: httpx.Client, user: str = "demo") -> httpx.Response:
        """Log ``user`` in through the gateway; return the callback's response."""
        return sign_in(browser, user)

    def request_counts(self) -> dict[str, int]:
        with self.sandbox_api() as api:
            return api.get("/_sandbox/requests").json()["counts"]


@contextmanager
def _stack(tmp_path_factory: pytest.TempPathFactory, **spotify_overrides: Any) -> Iterator[Stack]:
    catalog_url = f"sqlite:///{tmp_path_factory.mktemp('catalog') / 'catalog.db'}"
    catalog_ids = list(seed_catalog(catalog_url))
    db_name, spotify_db_url = new_pg_database("emergify_spotify")
    try:
        with run_spotify_stack(
            catalog_url=catalog_url,
            spotify_db_url=spotify_db_url,
            admin_key=ADMIN_KEY,
            session_secret=SESSION_SECRET,
            spotify_overrides={"max_retry_after_seconds": 5, **spotify_overrides},
        ) as s:
            yield Stack(s.sandbox, s.spotify, s.recommender, s.gateway, spotify_db_url, catalog_ids)
    finally:
        drop_pg_database(db_name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Sandbox, recommender, spotify-gateway and api-gateway, for one test module."""
    with _stack(tmp_path_factory) as s:
        yield s


@pytest.fixture(scope="module")
def loop_stack(tmp_path_factory: pytest.TempPathFactory, broker: EmbeddedBroker) -> Iterator[Stack]:
    """The stack with the embedded broker: the living-playlist sync worker consumes change
    events. Its periodic sweep is an hour apart, so a test that sees a sync within seconds saw
    the event (or the sweep at start) do it."""
    with _stack(
        tmp_path_factory,
        kafka_bootstrap_servers=broker.bootstrap,
        living_sync_interval_seconds=3600,
        # A group of its own: members of other tests' groups (killed ones too) hold nothing.
        living_sync_group=f"living-sync-{uuid.uuid4().hex}",
    ) as s:
        s.broker = broker.bootstrap
        yield s


@pytest.fixture(scope="module")
def refresh_stack(
    tmp_path_factory: pytest.TempPathFactory, broker: EmbeddedBroker
) -> Iterator[Stack]:
    """The stack whose living playlists are re-ranked when their last refresh is 20 s old
    (checked every 2 s); the sync worker's sweep is an hour apart."""
    with _stack(
        tmp_path_factory,
        kafka_bootstrap_servers=broker.bootstrap,
        living_refresh_interval_seconds=20,
        living_sync_interval_seconds=3600,
        living_sync_group=f"living-sync-{uuid.uuid4().hex}",
    ) as s:
        s.broker = broker.bootstrap
        yield s


@pytest.fixture(scope="module")
def quiet_stack(
    tmp_path_factory: pytest.TempPathFactory, broker: EmbeddedBroker
) -> Iterator[Stack]:
    """The stack whose spotify-gateway runs no sync worker (requests still sync inline), so
    that a test can run the worker in a process of its own and kill it."""
    with _stack(
        tmp_path_factory, kafka_bootstrap_servers=broker.bootstrap, living_sync_enabled=False
    ) as s:
        s.broker = broker.bootstrap
        yield s


@pytest.fixture
def signed_in(stack: Stack) -> Iterator[Callable[[str], httpx.Client]]:
    """``signed_in(user)``: a browser signed in as that demo listener (closed after the test)."""
    browsers: list[httpx.Client] = []

    def make(user: str = "demo") -> httpx.Client:
        browser = stack.browser()
        browsers.append(browser)
        stack.sign_in(browser, user)
        return browser

    yield make
    for browser in browsers:
        browser.close()
