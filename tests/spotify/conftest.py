"""The Spotify flow end to end, on real HTTP: the Spotify sandbox, the spotify-gateway (tokens
in a real PostgreSQL database), a real recommender over a SQLite catalog seeded from the sample
CSV, and the real api-gateway in front — each served by uvicorn on a free port.

Test modules cannot import this file (importlib mode): they get everything through the
``stack`` fixture. Tests act like a browser: an httpx client with a cookie jar that follows the
sign-in redirects by hand, always talking to the api-gateway (never to the spotify-gateway
directly).
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from testkit import drop_pg_database, new_pg_database

from emergify_cli.broker import free_port
from emergify_contracts.song import RowError, detect_layout, row_to_song
from emergify_contracts.tables import create_tables, make_engine, songs
from emergify_gateway.config import Settings as GatewaySettings
from emergify_gateway.main import create_app as create_gateway
from emergify_recommender.config import Settings as RecommenderSettings
from emergify_recommender.main import create_app as create_recommender
from emergify_spotify.config import Settings as SpotifySettings
from emergify_spotify.main import create_app as create_spotify
from emergify_spotify.sandbox.app import create_app as create_sandbox
from emergify_spotify.sandbox.config import SandboxSettings

SAMPLE_CSV = Path(__file__).resolve().parents[2] / "data" / "every_fresh_find.csv"
ADMIN_KEY = "spotify-test-admin-key-0123456789abcdef"
SESSION_SECRET = "spotify-test-session-secret-0123456789abcdef"
FERNET_KEY = "x1UoVTPeF2t0CSFz0gK3bcLSmzyq1Fa3cRVQzG5-8eg="
DASHBOARD = "http://127.0.0.1:8501/"


class Served:
    """An ASGI app served by uvicorn in a thread on a free port."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def seed_catalog(url: str) -> list[str]:
    """Write the sample CSV's songs into the feature table at ``url``; return their ids."""
    engine = make_engine(url)
    create_tables(engine)
    now = datetime.now(UTC)
    rows: dict[str, dict[str, Any]] = {}
    with SAMPLE_CSV.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        layout = detect_layout(list(reader.fieldnames or []))
        for raw in reader:
            try:
                song = row_to_song(raw, layout)
            except RowError:
                continue
            row = song.model_dump()
            row.update(
                cluster=None,
                model_version=None,
                upload_id="test",
                source="csv:exportify",
                ingested_at=now,
                kafka_partition=-1,
                kafka_offset=None,
                table_version=1,
                updated_at=now,
            )
            rows[song.track_id] = row
    with engine.begin() as conn:
        conn.execute(songs.insert(), list(rows.values()))
    engine.dispose()
    return list(rows)


@dataclass
class Stack:
    """The running services and what tests need to know about them."""

    sandbox: Served
    spotify: Served
    recommender: Served
    gateway: Served
    spotify_db_url: str
    catalog_ids: list[str]
    admin_key: str = ADMIN_KEY
    dashboard: str = DASHBOARD

    def browser(self) -> httpx.Client:
        """A fresh 'browser' on the api-gateway: a cookie jar, redirects followed by hand."""
        return httpx.Client(base_url=self.gateway.url, follow_redirects=False, timeout=30)

    def sandbox_api(self) -> httpx.Client:
        return httpx.Client(base_url=self.sandbox.url, timeout=10)

    def sign_in(self, browser: httpx.Client, user: str = "demo") -> httpx.Response:
        """Log ``user`` in through the gateway; return the callback's response."""
        login = browser.get("/api/v1/spotify/login")
        assert login.status_code == 302, login.text
        # login_hint (sandbox only) picks the demo listener, as the consent page would.
        authorize = browser.get(f"{login.headers['location']}&login_hint={user}")
        assert authorize.status_code == 303, authorize.text
        callback = browser.get(authorize.headers["location"])
        assert callback.status_code == 302, callback.text
        return callback

    def request_counts(self) -> dict[str, int]:
        with self.sandbox_api() as api:
            return api.get("/_sandbox/requests").json()["counts"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Sandbox, recommender, spotify-gateway and api-gateway, for one test module."""
    gateway_port = free_port()
    callback = f"http://127.0.0.1:{gateway_port}/api/v1/spotify/callback"
    sandbox_port = free_port()
    sandbox_settings = SandboxSettings(
        _env_file=None,  # type: ignore[call-arg]
        spotify_sandbox_url=f"http://127.0.0.1:{sandbox_port}",
        spotify_sandbox_redirect_uris=[callback],
        spotify_sandbox_auto_approve=True,
        spotify_sandbox_catalog_csv=str(SAMPLE_CSV),
    )
    catalog_url = f"sqlite:///{tmp_path_factory.mktemp('catalog') / 'catalog.db'}"
    catalog_ids = seed_catalog(catalog_url)
    recommender_settings = RecommenderSettings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=catalog_url,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",  # no broker: the poll suffices
        stream_processor_url=f"http://127.0.0.1:{free_port()}",
        refresh_interval_seconds=3600.0,
    )
    db_name, spotify_db_url = new_pg_database("emergify_spotify")
    served: list[Served] = []
    try:
        sandbox = Served(create_sandbox(sandbox_settings), sandbox_port).start()
        served.append(sandbox)
        recommender = Served(create_recommender(recommender_settings)).start()
        served.append(recommender)
        spotify = Served(
            create_spotify(
                SpotifySettings(
                    _env_file=None,  # type: ignore[call-arg]
                    database_url=spotify_db_url,
                    spotify_client_id=sandbox_settings.spotify_sandbox_client_id,
                    spotify_client_secret=sandbox_settings.spotify_sandbox_client_secret,
                    spotify_redirect_uri=callback,
                    spotify_accounts_url=sandbox.url,
                    spotify_api_url=f"{sandbox.url}/v1",
                    session_secret=SESSION_SECRET,
                    token_encryption_key=FERNET_KEY,
                    dashboard_url=DASHBOARD,
                    recommender_url=recommender.url,
                    max_retry_after_seconds=5,
                )
            )
        ).start()
        served.append(spotify)
        with pytest.MonkeyPatch.context() as mp:
            # The gateway reads the shared session secret from the environment.
            mp.setenv("EMERGIFY_SESSION_SECRET", SESSION_SECRET)
            gateway_app = create_gateway(
                GatewaySettings(
                    _env_file=None,  # type: ignore[call-arg]
                    ingest_url=f"http://127.0.0.1:{free_port()}",
                    stream_processor_url=f"http://127.0.0.1:{free_port()}",
                    recommender_url=recommender.url,
                    spotify_gateway_url=spotify.url,
                    admin_api_key=ADMIN_KEY,
                    rate_limit_per_minute=0,
                )
            )
        gateway = Served(gateway_app, gateway_port).start()
        served.append(gateway)
        yield Stack(sandbox, spotify, recommender, gateway, spotify_db_url, catalog_ids)
    finally:
        for server in reversed(served):
            server.stop()
        drop_pg_database(db_name)


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
