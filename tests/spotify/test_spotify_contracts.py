"""The pieces on their own: the session cookie, the 503 without credentials (through the
gateway), and the sandbox keeping Spotify's contract (PKCE, limits, removed endpoints)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from catalog_fixtures import SAMPLE_CSV
from fastapi.testclient import TestClient
from servers import serving

from emergify_contracts import session
from emergify_gateway.config import Settings as GatewaySettings
from emergify_gateway.main import create_app as create_gateway
from emergify_spotify.config import Settings
from emergify_spotify.main import create_app
from emergify_spotify.oauth import code_challenge, new_code_verifier
from emergify_spotify.sandbox.app import create_app as create_sandbox
from emergify_spotify.sandbox.config import SandboxSettings

SECRET = "a-session-secret-for-tests-0123456789abcdef"
CALLBACK = "http://127.0.0.1:8080/api/v1/spotify/callback"


def test_session_cookie_sign_and_verify() -> None:
    value = session.sign("user.with|odd:chars", SECRET, 3600, now=1000)
    assert session.verify(value, SECRET, now=2000) == "user.with|odd:chars"
    assert session.verify(value, SECRET, now=4600) is None  # expired
    assert session.verify(value, "another-secret-of-enough-length-0123456789", now=2000) is None
    listener, expiry, signature = value.split(".")
    assert session.verify(f"{listener}.{int(expiry) + 99}.{signature}", SECRET, now=2000) is None
    for junk in ("", "a.b", "a.b.c", "!!.1.!!", None):
        assert session.verify(junk, SECRET) is None


def test_pkce_challenge_is_rfc7636_s256() -> None:
    verifier = new_code_verifier()
    assert 43 <= len(verifier) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert code_challenge(verifier) == expected.decode().rstrip("=")
    assert len(code_challenge(verifier)) == 43


def test_without_credentials_spotify_routes_are_503_and_health_is_200(
    tmp_path: Path, serve_app
) -> None:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 's.db'}")  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as direct:
        health = direct.get("/health")
        assert health.status_code == 200
        assert health.json()["spotify_configured"] is False
        assert "EMERGIFY_SPOTIFY_CLIENT_ID" in health.json()["missing_settings"]
    upstream = serve_app(create_app(settings))
    gateway_settings = GatewaySettings(
        _env_file=None,  # type: ignore[call-arg]
        spotify_gateway_url=upstream,
        admin_api_key="an-admin-key-for-tests-0123456789",
        rate_limit_per_minute=0,
    )
    with TestClient(create_gateway(gateway_settings)) as gateway:
        login = gateway.get("/api/v1/spotify/login", follow_redirects=False)
        assert login.status_code == 503
        assert login.headers["content-type"] == "application/problem+json"
        detail = login.json()["detail"]
        assert "EMERGIFY_SPOTIFY_CLIENT_ID" in detail and "EMERGIFY_SPOTIFY_CLIENT_SECRET" in detail
        me = gateway.get(
            "/api/v1/spotify/me",
            headers={"X-API-Key": gateway_settings.admin_api_key.get_secret_value()},
        )  # type: ignore[union-attr]
        assert me.status_code == 503


@pytest.fixture
def serve_app() -> Iterator[Callable[[Any], str]]:
    """``serve_app(app)``: serve an ASGI app on a free port until the test ends; its URL."""
    with serving() as serve:
        yield lambda app: serve(app).url


@pytest.fixture
def sandbox() -> TestClient:
    settings = SandboxSettings(
        _env_file=None,  # type: ignore[call-arg]
        spotify_sandbox_redirect_uris=[CALLBACK],
        spotify_sandbox_auto_approve=True,
        spotify_sandbox_catalog_csv=str(SAMPLE_CSV),
    )
    return TestClient(create_sandbox(settings), follow_redirects=False)


def _code(sandbox: TestClient, verifier: str, **extra: str) -> str:
    params = {
        "client_id": "emergify-sandbox-client",
        "response_type": "code",
        "redirect_uri": CALLBACK,
        "scope": "user-library-read playlist-modify-private",
        "state": "s1",
        "code_challenge_method": "S256",
        "code_challenge": code_challenge(verifier),
        **extra,
    }
    response = sandbox.get("/authorize", params=params)
    assert response.status_code == 303, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]


def _basic() -> dict[str, str]:
    raw = base64.b64encode(b"emergify-sandbox-client:emergify-sandbox-secret").decode()
    return {"Authorization": f"Basic {raw}"}


def test_sandbox_authorize_validates_client_redirect_and_pkce(sandbox: TestClient) -> None:
    base = {
        "client_id": "emergify-sandbox-client",
        "response_type": "code",
        "redirect_uri": CALLBACK,
    }
    assert sandbox.get("/authorize", params={**base, "client_id": "nope"}).status_code == 400
    bad_uri = {**base, "redirect_uri": "http://localhost:8080/api/v1/spotify/callback"}
    assert "Invalid redirect URI" in sandbox.get("/authorize", params=bad_uri).text
    token_flow = sandbox.get("/authorize", params={**base, "response_type": "token"})
    assert "error=unsupported_response_type" in token_flow.headers["location"]
    plain = sandbox.get(
        "/authorize", params={**base, "code_challenge_method": "plain", "code_challenge": "x" * 43}
    )
    assert "error=invalid_request" in plain.headers["location"]


def test_sandbox_token_checks_the_verifier_and_codes_work_once(sandbox: TestClient) -> None:
    verifier = "v" * 64
    code = _code(sandbox, verifier)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    wrong = sandbox.post("/api/token", data={**form, "code_verifier": "w" * 64}, headers=_basic())
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    code = _code(sandbox, verifier)
    form["code"] = code
    ok = sandbox.post("/api/token", data={**form, "code_verifier": verifier}, headers=_basic())
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer"
    again = sandbox.post("/api/token", data={**form, "code_verifier": verifier}, headers=_basic())
    assert again.json()["error"] == "invalid_grant"
    bad_secret = sandbox.post(
        "/api/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": ok.json()["refresh_token"],
            "client_id": "emergify-sandbox-client",
            "client_secret": "wrong",
        },
    )
    assert bad_secret.json()["error"] == "invalid_client"


def _bearer(sandbox: TestClient, **extra: str) -> dict[str, str]:
    verifier = "p" * 64
    code = _code(sandbox, verifier, **extra)
    tokens = sandbox.post(
        "/api/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
        },
        headers=_basic(),
    ).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def test_sandbox_playlist_limits_and_removed_endpoints(sandbox: TestClient) -> None:
    auth = _bearer(sandbox)
    created = sandbox.post("/v1/me/playlists", json={"name": "x", "public": False}, headers=auth)
    assert (
        created.status_code == 201 and "items" in created.json() and "tracks" not in created.json()
    )
    pid = created.json()["id"]
    uris = [f"spotify:track:{hashlib.sha256(str(i).encode()).hexdigest()[:22]}" for i in range(101)]
    too_many = sandbox.post(f"/v1/playlists/{pid}/items", json={"uris": uris}, headers=auth)
    assert too_many.status_code == 400
    assert too_many.json()["error"]["message"].startswith("You can add a maximum of 100")
    assert (
        sandbox.post(
            f"/v1/playlists/{pid}/items", json={"uris": uris[:100]}, headers=auth
        ).status_code
        == 201
    )
    page = sandbox.get(f"/v1/playlists/{pid}/items", params={"limit": 50}, headers=auth).json()
    assert page["total"] == 100 and len(page["items"]) == 50 and page["next"]
    assert "item" in page["items"][0] and "track" not in page["items"][0]
    assert (
        sandbox.post(
            f"/v1/playlists/{pid}/tracks", json={"uris": uris[:1]}, headers=auth
        ).status_code
        == 403
    )
    assert (
        sandbox.post("/v1/users/demo/playlists", json={"name": "x"}, headers=auth).status_code
        == 403
    )
    assert (
        sandbox.get("/v1/audio-features", params={"ids": uris[0][-22:]}, headers=auth).status_code
        == 403
    )
    assert sandbox.get("/v1/me", headers={"Authorization": "Bearer nope"}).json() == {
        "error": {"status": 401, "message": "Invalid access token"}
    }


def test_sandbox_top_tracks_by_time_range(sandbox: TestClient) -> None:
    without_scope = sandbox.get("/v1/me/top/tracks", headers=_bearer(sandbox))
    assert without_scope.status_code == 403
    auth = _bearer(sandbox, scope="user-top-read")
    ranges = {}
    for time_range in ("short_term", "medium_term", "long_term"):
        page = sandbox.get(
            "/v1/me/top/tracks", params={"time_range": time_range, "limit": 50}, headers=auth
        )
        assert page.status_code == 200
        items = page.json()["items"]
        assert items and all(t["type"] == "track" and "popularity" not in t for t in items)
        ranges[time_range] = [t["id"] for t in items]
    assert len({tuple(ids) for ids in ranges.values()}) == 3  # three different answers
    bad = sandbox.get("/v1/me/top/tracks", params={"time_range": "forever"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "Invalid time range"
    too_many = sandbox.get("/v1/me/top/tracks", params={"limit": 51}, headers=auth)
    assert too_many.status_code == 400


def test_sandbox_lists_own_playlists_and_removes_items(sandbox: TestClient) -> None:
    assert sandbox.get("/v1/me/playlists", headers=_bearer(sandbox)).status_code == 403
    auth = _bearer(sandbox, scope="playlist-read-private playlist-modify-private")
    mine = sandbox.get("/v1/me/playlists", headers=auth).json()
    road_trip = next(p for p in mine["items"] if p["name"] == "Road trip")
    assert road_trip["items"]["total"] == 12 and "tracks" not in road_trip
    pid = road_trip["id"]
    items = sandbox.get(f"/v1/playlists/{pid}/items", headers=auth).json()["items"]
    first, second = items[0]["item"]["uri"], items[1]["item"]["uri"]
    # The body spotipy 2.26 sends for playlist_remove_all_occurrences_of_items.
    removed = sandbox.request(
        "DELETE",
        f"/v1/playlists/{pid}/items",
        json={"items": [{"uri": first}, {"uri": second}]},
        headers=auth,
    )
    assert removed.status_code == 200 and removed.json()["snapshot_id"]
    after = sandbox.get(f"/v1/playlists/{pid}/items", headers=auth).json()
    assert after["total"] == 10
    assert {first, second}.isdisjoint(i["item"]["uri"] for i in after["items"])
    old_body = sandbox.request(
        "DELETE", f"/v1/playlists/{pid}/items", json={"tracks": [{"uri": first}]}, headers=auth
    )
    assert old_body.status_code == 400  # the pre-2026 field name is refused
    old_path = sandbox.request(
        "DELETE", f"/v1/playlists/{pid}/tracks", json={"items": [{"uri": first}]}, headers=auth
    )
    assert old_path.status_code == 403
