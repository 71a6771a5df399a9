"""Taste seeds and playlist sync against the Spotify sandbox over real HTTP, with spotipy.

The sandbox is served by uvicorn; a listener signs in through its OAuth endpoints (PKCE) and
the tokens go into a real token store, as the spotify-gateway keeps them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from catalog_fixtures import SAMPLE_CSV
from cryptography.fernet import Fernet
from servers import serving

from emergify_contracts import spotify_tables  # noqa: F401  (registers the token table)
from emergify_contracts.tables import create_tables
from emergify_spotify.config import SCOPES, Settings
from emergify_spotify.oauth import code_challenge, new_code_verifier
from emergify_spotify.playlist_sync import playlist_track_ids, sync_playlist
from emergify_spotify.sandbox.app import create_app as create_sandbox
from emergify_spotify.sandbox.config import SandboxSettings
from emergify_spotify.spotify_api import SpotifyApi
from emergify_spotify.taste import candidate_seeds
from emergify_spotify.tokens import TokenCipher, TokenStore

CALLBACK = "http://127.0.0.1:8080/api/v1/spotify/callback"
CLIENT = ("emergify-sandbox-client", "emergify-sandbox-secret")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    settings = SandboxSettings(
        _env_file=None,  # type: ignore[call-arg]
        spotify_sandbox_redirect_uris=[CALLBACK],
        spotify_sandbox_auto_approve=True,
        spotify_sandbox_catalog_csv=str(SAMPLE_CSV),
    )
    with serving() as serve:
        yield serve(create_sandbox(settings)).url


def api_for(sandbox_url: str, tmp_path: Path, user: str = "demo") -> SpotifyApi:
    """A signed-in listener's SpotifyApi, tokens in a real (SQLite) token store."""
    verifier = new_code_verifier()
    with httpx.Client(base_url=sandbox_url, follow_redirects=False) as web:
        authorize = web.get(
            "/authorize",
            params={
                "client_id": CLIENT[0],
                "response_type": "code",
                "redirect_uri": CALLBACK,
                "scope": SCOPES,
                "code_challenge_method": "S256",
                "code_challenge": code_challenge(verifier),
                "login_hint": user,
            },
        )
        code = parse_qs(urlsplit(authorize.headers["location"]).query)["code"][0]
        basic = base64.b64encode(":".join(CLIENT).encode()).decode()
        token = web.post(
            "/api/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": CALLBACK,
                "code_verifier": verifier,
            },
            headers={"Authorization": f"Basic {basic}"},
        ).json()
    token["expires_at"] = int(datetime.now(UTC).timestamp()) + token["expires_in"]
    key = Fernet.generate_key().decode()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'tokens.db'}")
    create_tables(engine)
    store = TokenStore(engine, TokenCipher(key))
    store.save(user, token)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        spotify_client_id=CLIENT[0],
        spotify_client_secret=CLIENT[1],
        spotify_accounts_url=sandbox_url,
        spotify_api_url=f"{sandbox_url}/v1",
        token_encryption_key=key,
        max_retry_after_seconds=2,
    )
    return SpotifyApi(settings, store, user)


def test_candidate_seeds_keep_each_tracks_strongest_reason() -> None:
    top = {
        "short_term": [{"id": "a"}],
        "medium_term": [{"id": "a"}, {"id": "b"}],
        "long_term": [{"id": "c"}],
    }
    saved = [
        {"added_at": (NOW - timedelta(days=30)).isoformat(), "track": {"id": "c"}},
        {"added_at": NOW.isoformat(), "track": {"id": "d"}},
    ]
    seeds = candidate_seeds(top, saved, NOW, half_life_days=30)
    assert seeds["a"].weight == 1.0 and "4 weeks" in seeds["a"].why
    assert seeds["b"].weight == 0.7
    assert seeds["c"].weight == 0.5  # all-time top (0.5) ties a like 30 days old (0.5)
    assert seeds["d"].weight == 1.0 and seeds["d"].why.startswith("liked on")


def test_sync_adds_the_missing_removes_the_rest_and_is_idempotent(
    sandbox_url: str, tmp_path: Path
) -> None:
    api = api_for(sandbox_url, tmp_path)
    created = api.call(lambda sp: sp._post("me/playlists", payload={"name": "living"}), "create")
    pid = created["id"]
    liked = api.call(lambda sp: sp.current_user_saved_tracks(limit=50), "liked")["items"]
    ids = [i["track"]["id"] for i in liked]
    api.call(lambda sp: sp.playlist_add_items(pid, [ids[0], ids[1], ids[1], ids[5]]), "seed")

    desired = ids[:4]
    first = sync_playlist(api, pid, desired)
    assert set(first.removed) == {ids[1], ids[5]}  # a stranger and a duplicate
    assert playlist_track_ids(api, pid) == [ids[0], *desired[1:]]
    again = sync_playlist(api, pid, desired)
    assert again.added == () and again.removed == ()


def test_sync_waits_out_a_rate_limit(sandbox_url: str, tmp_path: Path) -> None:
    api = api_for(sandbox_url, tmp_path)
    pid = api.call(lambda sp: sp._post("me/playlists", payload={"name": "x"}), "create")["id"]
    ids = [
        i["track"]["id"]
        for i in api.call(lambda sp: sp.current_user_saved_tracks(limit=3), "liked")["items"]
    ]
    with httpx.Client(base_url=sandbox_url) as control:
        control.post(
            "/_sandbox/rate-limit",
            json={"path_prefix": f"/v1/playlists/{pid}/items", "count": 1, "retry_after": 1},
        )
    result = sync_playlist(api, pid, ids)
    assert result.added == tuple(ids)
    assert playlist_track_ids(api, pid) == ids
