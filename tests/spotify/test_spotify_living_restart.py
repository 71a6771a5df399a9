"""A spotify-gateway process killed in the middle of a living-playlist sync, and restarted: the
Spotify playlist ends exactly as desired (nothing twice, nothing missing).

The api-gateway's spotify-gateway here runs no sync worker; the worker under test runs in a
real ``python -m emergify_spotify`` process on the same database, killed with SIGKILL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from spotify_stack import create_living_playlist
from testkit import wait_for

from emergify_cli.broker import free_port
from emergify_contracts.listener import living_playlist_items, living_playlists


@pytest.fixture(scope="module")
def stack(quiet_stack):  # type: ignore[no-untyped-def]
    return quiet_stack


def spotify_playlist(stack: Any, user: str, playlist_id: str) -> list[str]:
    with stack.sandbox_api() as api:
        mine = api.get(f"/_sandbox/users/{user}/playlists").json()["items"]
    return next(p["track_ids"] for p in mine if p["id"] == playlist_id)


@pytest.fixture
def worker_process(stack: Any, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen]]:
    """``start()``: a spotify-gateway process (with its sync worker, sweeping every second)
    configured like the stack's; every one started is killed after the test."""
    settings = stack.spotify.app.state.services.settings
    env = {
        **os.environ,
        "EMERGIFY_DATABASE_URL": stack.spotify_db_url,
        "EMERGIFY_SPOTIFY_SANDBOX": "false",
        "EMERGIFY_SPOTIFY_CLIENT_ID": settings.spotify_client_id,
        "EMERGIFY_SPOTIFY_CLIENT_SECRET": settings.spotify_client_secret.get_secret_value(),
        "EMERGIFY_SPOTIFY_REDIRECT_URI": settings.spotify_redirect_uri,
        "EMERGIFY_SPOTIFY_ACCOUNTS_URL": settings.spotify_accounts_url,
        "EMERGIFY_SPOTIFY_API_URL": settings.spotify_api_url,
        "EMERGIFY_SESSION_SECRET": settings.session_secret.get_secret_value(),
        "EMERGIFY_TOKEN_ENCRYPTION_KEY": settings.token_encryption_key.get_secret_value(),
        "EMERGIFY_RECOMMENDER_URL": settings.recommender_url,
        "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": stack.broker,
        "EMERGIFY_LIVING_SYNC_INTERVAL_SECONDS": "1",
        "EMERGIFY_LIVING_SYNC_GROUP": f"living-sync-{uuid.uuid4().hex}",
        "EMERGIFY_MAX_RETRY_AFTER_SECONDS": "5",
    }
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        env["EMERGIFY_SPOTIFY_GATEWAY_URL"] = f"http://127.0.0.1:{free_port()}"
        process = subprocess.Popen(
            [sys.executable, "-m", "emergify_spotify"],
            env=env,
            cwd=tmp_path,  # no .env of the repository
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_killed_mid_sync_and_restarted_ends_as_desired(
    stack: Any,
    signed_in: Callable[[str], httpx.Client],
    worker_process: Callable[[], subprocess.Popen],
) -> None:
    browser = signed_in("demo")
    created = create_living_playlist(browser, stack.catalog_ids[700:702], 10, "Survives")
    playlist_id = created["id"]
    spotify_id = created["spotify_playlist_id"]
    before = [s["track_id"] for s in created["songs"]]
    entering = [t for t in stack.catalog_ids[800:900] if t not in before][:4]
    desired = before[:6] + entering
    engine = sa.create_engine(stack.spotify_db_url)

    def synced_version() -> int:
        with engine.connect() as conn:
            return conn.execute(
                sa.select(living_playlists.c.synced_version).where(
                    living_playlists.c.playlist_id == playlist_id
                )
            ).scalar_one()

    try:
        with engine.begin() as conn:
            t = living_playlist_items
            conn.execute(
                t.delete().where(t.c.playlist_id == playlist_id, t.c.track_id.in_(before[6:]))
            )
            conn.execute(
                t.insert(),
                [
                    {
                        "playlist_id": playlist_id,
                        "track_id": x,
                        "distance": 0.0,
                        "added_at": datetime.now(UTC),
                    }
                    for x in entering
                ],
            )
            conn.execute(
                living_playlists.update()
                .where(living_playlists.c.playlist_id == playlist_id)
                .values(version=2)
            )
        with stack.sandbox_api() as sandbox:
            # An earlier sync got half-way before dying: two of the entering songs are in.
            token = sandbox.get("/_sandbox/tokens", params={"user": "demo"}).json()[
                "access_tokens"
            ][-1]
            partial = sandbox.post(
                f"/v1/playlists/{spotify_id}/items",
                json={"uris": [f"spotify:track:{x}" for x in entering[:2]]},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert partial.status_code == 201, partial.text
            # Spotify throttles the playlist: the next sync waits there, where it is killed.
            sandbox.post(
                "/_sandbox/rate-limit",
                json={"path_prefix": f"/v1/playlists/{spotify_id}", "count": 3, "retry_after": 3},
            )
        reads = stack.request_counts().get("GET /v1/playlists/{id}/items", 0)
        first = worker_process()
        wait_for(
            lambda: stack.request_counts().get("GET /v1/playlists/{id}/items", 0) > reads,
            60,
            "the worker to start syncing",
        )
        first.kill()
        first.wait(timeout=10)
        assert synced_version() == 1

        worker_process()
        wait_for(lambda: synced_version() == 2, 90, "the restarted worker to sync")
        on_spotify = spotify_playlist(stack, "demo", spotify_id)
        assert len(on_spotify) == len(set(on_spotify)) == 10
        assert set(on_spotify) == set(desired)
    finally:
        engine.dispose()
