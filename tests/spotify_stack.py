"""The sign-in stack on real HTTP: the Spotify sandbox, a recommender over a seeded catalog,
optionally ingest, the spotify-gateway and the api-gateway in front, each served by uvicorn.

Importable as ``spotify_stack`` (pytest puts tests/ on the path). The stream processor is not
started: callers seed the feature table (``catalog_fixtures.seed_catalog``) themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from catalog_fixtures import SAMPLE_CSV
from servers import ServedApp, serving

from emergify_cli.broker import free_port
from emergify_gateway.config import Settings as GatewaySettings
from emergify_gateway.main import create_app as create_gateway
from emergify_ingest.config import Settings as IngestSettings
from emergify_ingest.main import create_app as create_ingest
from emergify_recommender.config import Settings as RecommenderSettings
from emergify_recommender.main import create_app as create_recommender
from emergify_spotify.config import Settings as SpotifySettings
from emergify_spotify.main import create_app as create_spotify
from emergify_spotify.sandbox.app import create_app as create_sandbox
from emergify_spotify.sandbox.config import SandboxSettings

FERNET_KEY = "x1UoVTPeF2t0CSFz0gK3bcLSmzyq1Fa3cRVQzG5-8eg="
DASHBOARD_URL = "http://127.0.0.1:8501/"


@dataclass
class SpotifyStack:
    """The running servers (``ingest`` is None when it was not asked for)."""

    sandbox: ServedApp
    recommender: ServedApp
    ingest: ServedApp | None
    spotify: ServedApp
    gateway: ServedApp


@contextmanager
def run_spotify_stack(
    *,
    catalog_url: str,
    spotify_db_url: str,
    admin_key: str,
    session_secret: str,
    ingest_settings: IngestSettings | None = None,
    spotify_overrides: dict[str, Any] | None = None,
    gateway_overrides: dict[str, Any] | None = None,
) -> Iterator[SpotifyStack]:
    """Serve the stack until the block ends; servers stop in the reverse order of starting.

    The sandbox approves consent at once and serves the sample CSV's catalog; the recommender
    reads ``catalog_url`` (no broker: its periodic poll is enough); the spotify-gateway keeps
    tokens at ``spotify_db_url``; without ``ingest_settings`` the gateway's ingest URL answers
    nothing.
    """
    gateway_port, sandbox_port = free_port(), free_port()
    callback = f"http://127.0.0.1:{gateway_port}/api/v1/spotify/callback"
    sandbox_settings = SandboxSettings(
        _env_file=None,  # type: ignore[call-arg]
        spotify_sandbox_url=f"http://127.0.0.1:{sandbox_port}",
        spotify_sandbox_redirect_uris=[callback],
        spotify_sandbox_auto_approve=True,
        spotify_sandbox_catalog_csv=str(SAMPLE_CSV),
    )
    with serving() as serve:
        sandbox = serve(create_sandbox(sandbox_settings), sandbox_port)
        recommender = serve(
            create_recommender(
                RecommenderSettings(
                    _env_file=None,  # type: ignore[call-arg]
                    database_url=catalog_url,
                    kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",  # no change feed
                    stream_processor_url=f"http://127.0.0.1:{free_port()}",
                    refresh_interval_seconds=3600.0,
                )
            )
        )
        ingest = serve(create_ingest(ingest_settings)) if ingest_settings else None
        spotify = serve(
            create_spotify(
                SpotifySettings(
                    _env_file=None,  # type: ignore[call-arg]
                    database_url=spotify_db_url,
                    spotify_client_id=sandbox_settings.spotify_sandbox_client_id,
                    spotify_client_secret=sandbox_settings.spotify_sandbox_client_secret,
                    spotify_redirect_uri=callback,
                    spotify_accounts_url=sandbox.url,
                    spotify_api_url=f"{sandbox.url}/v1",
                    session_secret=session_secret,
                    token_encryption_key=FERNET_KEY,
                    dashboard_url=DASHBOARD_URL,
                    recommender_url=recommender.url,
                    **(spotify_overrides or {}),
                )
            )
        )
        with pytest.MonkeyPatch.context() as mp:
            # The gateway reads the shared session secret from the environment.
            mp.setenv("EMERGIFY_SESSION_SECRET", session_secret)
            gateway_app = create_gateway(
                GatewaySettings(
                    _env_file=None,  # type: ignore[call-arg]
                    ingest_url=ingest.url if ingest else f"http://127.0.0.1:{free_port()}",
                    stream_processor_url=f"http://127.0.0.1:{free_port()}",
                    recommender_url=recommender.url,
                    spotify_gateway_url=spotify.url,
                    admin_api_key=admin_key,
                    session_secret=session_secret,
                    rate_limit_per_minute=0,
                    **(gateway_overrides or {}),
                )
            )
        gateway = serve(gateway_app, gateway_port)
        yield SpotifyStack(sandbox, recommender, ingest, spotify, gateway)


def sign_in(browser: httpx.Client, user: str = "demo") -> httpx.Response:
    """Sign ``user`` in through the gateway like a browser; return the callback's response.

    ``browser`` talks to the api-gateway and must not follow redirects: each hop is checked.
    """
    login = browser.get("/api/v1/spotify/login")
    assert login.status_code == 302, login.text
    # login_hint (sandbox only) picks the demo listener, as the consent page would.
    authorize = browser.get(f"{login.headers['location']}&login_hint={user}")
    assert authorize.status_code == 303, authorize.text
    callback = browser.get(authorize.headers["location"])
    assert callback.status_code == 302, callback.text
    return callback


def create_living_playlist(
    browser: httpx.Client, seeds: list[str], size: int, name: str = "Fresh finds"
) -> dict[str, Any]:
    """Create a living playlist (no popularity cap) as the signed-in ``browser``; its 201 body."""
    answer = browser.post(
        "/api/v1/spotify/living-playlists",
        json={"name": name, "size": size, "max_popularity": 100, "seeds": seeds},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()
