"""Sign-in, the listener's data and playlist export, through the api-gateway against the
Spotify sandbox (the issue's acceptance list, one test per item)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import sqlalchemy as sa

from emergify_contracts.session import SESSION_COOKIE
from emergify_contracts.spotify_tables import spotify_tokens

Stack = Any  # tests/spotify/conftest.py's Stack (conftest modules are not importable)
SignedIn = Callable[[str], httpx.Client]
DASHBOARD = "http://127.0.0.1:8501/"
CREATE = "POST /v1/me/playlists"
ADD = "POST /v1/playlists/{id}/items"
TOKEN = "POST /api/token"


def authorize_params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def test_login_redirect_carries_pkce_s256_and_state(stack: Stack) -> None:
    with stack.browser() as browser:
        login = browser.get("/api/v1/spotify/login")
    assert login.status_code == 302
    location = login.headers["location"]
    assert location.startswith(f"{stack.sandbox.url}/authorize?")
    params = authorize_params(location)
    assert params["response_type"] == "code"
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43  # base64url SHA-256, no padding
    assert len(params["state"]) >= 32
    assert params["client_id"] and params["redirect_uri"].endswith("/api/v1/spotify/callback")
    assert set(params["scope"].split()) == {
        "user-library-read",
        "user-top-read",
        "playlist-read-private",
        "playlist-modify-private",
        "playlist-modify-public",
    }
    # Two logins never share a state or a challenge.
    with stack.browser() as other:
        again = authorize_params(other.get("/api/v1/spotify/login").headers["location"])
    assert again["state"] != params["state"]
    assert again["code_challenge"] != params["code_challenge"]


def test_callback_with_wrong_or_reused_state_is_refused(stack: Stack) -> None:
    with stack.browser() as browser:
        login = browser.get("/api/v1/spotify/login")
        state = authorize_params(login.headers["location"])["state"]
        authorize = browser.get(login.headers["location"])
        callback_url = authorize.headers["location"]
        code = parse_qs(urlsplit(callback_url).query)["code"][0]

        wrong = browser.get("/api/v1/spotify/callback", params={"code": code, "state": "forged"})
        assert wrong.status_code == 400
        assert wrong.headers["content-type"] == "application/problem+json"
        assert "state" in wrong.json()["detail"]
        assert SESSION_COOKIE not in wrong.cookies

        first = browser.get(callback_url)
        assert first.status_code == 302 and first.headers["location"] == DASHBOARD
        assert SESSION_COOKIE in browser.cookies

    # The same callback again, even from a browser holding the state cookie: state is one-time.
    with stack.browser() as replay:
        replay.cookies.set("emergify_oauth_state", state, path="/api/v1/spotify/callback")
        reused = replay.get(callback_url)
        assert reused.status_code == 400
        assert "already used" in reused.json()["detail"]
        assert SESSION_COOKIE not in replay.cookies


def test_denied_consent_lands_on_the_dashboard_with_the_error(stack: Stack) -> None:
    with stack.browser() as browser:
        login = browser.get("/api/v1/spotify/login")
        state = authorize_params(login.headers["location"])["state"]
        denied = browser.get(
            "/api/v1/spotify/callback", params={"error": "access_denied", "state": state}
        )
    assert denied.status_code == 302
    assert denied.headers["location"] == f"{DASHBOARD}?spotify_error=access_denied"


def test_session_cookie_is_signed_httponly_and_works(stack: Stack) -> None:
    with stack.browser() as browser:
        callback = stack.sign_in(browser, "demo")
        set_cookie = next(
            v for v in callback.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE)
        )
        lowered = set_cookie.lower()
        assert "httponly" in lowered and "samesite=lax" in lowered
        assert "max-age=" in lowered and "path=/" in lowered
        me = browser.get("/api/v1/spotify/me")
        assert me.status_code == 200, me.text
        assert me.json()["id"] == "demo"
        # The session also reads the rest of the API (no key), but never writes.
        song = browser.get(f"/api/v1/songs/{stack.catalog_ids[0]}")
        assert song.status_code == 200
        assert browser.post("/api/v1/model/retrain").status_code == 403
        # A tampered cookie is no session at all.
        value = browser.cookies[SESSION_COOKIE]
        browser.cookies.set(SESSION_COOKIE, value[:-2] + "xx")
        assert browser.get("/api/v1/spotify/me").status_code == 401
    # No cookie: the gateway asks for a key or a session.
    with stack.browser() as anonymous:
        refused = anonymous.get("/api/v1/spotify/me")
        assert refused.status_code == 401
        assert "/api/v1/spotify/login" in refused.json()["detail"]


def test_gateway_never_replays_a_listeners_cookie_to_another_caller(
    stack: Stack, signed_in: SignedIn
) -> None:
    signed_in("demo")
    with stack.browser() as keyed:
        # A key holder without a session reaches the service, which asks them to sign in.
        response = keyed.get("/api/v1/spotify/me", headers={"X-API-Key": stack.admin_key})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_top_artists_latest_added_liked_and_favourite(stack: Stack, signed_in: SignedIn) -> None:
    browser = signed_in("demo")
    top = browser.get("/api/v1/spotify/me/top-artists", params={"limit": 10})
    assert top.status_code == 200, top.text
    artists = top.json()["items"]
    assert len(artists) == 10
    assert {"id", "name", "genres", "images", "spotify_url"} <= artists[0].keys()

    latest = browser.get("/api/v1/spotify/me/latest-added")
    assert latest.status_code == 200, latest.text
    song = latest.json()["song"]
    assert song["in_catalog"] is True and song["added_at"].startswith("2026-03-01")

    liked = browser.get("/api/v1/spotify/me/liked", params={"limit": 100}).json()
    assert liked["total"] == 53 and len(liked["items"]) == 53  # paged through 50 + 3
    assert liked["catalog_available"] is True
    unknown = [s for s in liked["items"] if not s["in_catalog"]]
    assert len(unknown) == 3
    known_ids = {s["id"] for s in liked["items"] if s["in_catalog"]}

    favourite = browser.get("/api/v1/spotify/me/favourite")
    assert favourite.status_code == 200, favourite.text
    body = favourite.json()
    assert body["source"] == "catalog"
    assert body["song"]["id"] in known_ids
    assert 0 <= body["features"]["danceability"] <= 1 and body["features"]["tempo"] > 0
    # What the browser got never includes a token.
    with stack.sandbox_api() as api:
        issued = api.get("/_sandbox/tokens", params={"user": "demo"}).json()
    responses = [top, latest, favourite, browser.get("/api/v1/spotify/me")]
    # Bodies, headers (Set-Cookie included) and the browser's cookie jar: nothing carries one.
    everything = "".join(
        r.text + "".join(f"{k}: {v}\n" for k, v in r.headers.multi_items()) for r in responses
    ) + "".join(f"{c.name}={c.value}" for c in browser.cookies.jar)
    tokens = issued["access_tokens"] + issued["refresh_tokens"]
    assert tokens and not any(t in everything for t in tokens)


def test_favourite_without_catalog_songs_is_422_with_a_suggestion(
    stack: Stack, signed_in: SignedIn
) -> None:
    browser = signed_in("nocatalog")
    before = stack.request_counts()
    response = browser.get("/api/v1/spotify/me/favourite")
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert "audio features" in problem["detail"]
    assert problem["suggestion"]["track_id"] in set(stack.catalog_ids)
    assert delta(before, stack.request_counts(), "GET /v1/audio-features") == 1


def test_45_track_playlist_takes_one_create_and_one_add(stack: Stack, signed_in: SignedIn) -> None:
    browser = signed_in("demo")
    track_ids = stack.catalog_ids[100:145]
    before = stack.request_counts()
    response = browser.post(
        "/api/v1/spotify/playlists",
        json={
            "name": "Emerging for demo",
            "description": "made by a test",
            "public": False,
            "track_ids": track_ids,
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["added"] == 45
    assert created["url"] == f"https://open.spotify.com/playlist/{created['id']}"
    after = stack.request_counts()
    assert delta(before, after, CREATE) == 1
    assert delta(before, after, ADD) == 1
    removed = [k for k in after if k.endswith("/{id}/tracks") or k.startswith("POST /v1/users/")]
    assert not removed  # the endpoints Spotify removed in February 2026 (they answer 403)
    with stack.sandbox_api() as api:
        playlists = api.get("/_sandbox/users/demo/playlists").json()["items"]
    saved = next(p for p in playlists if p["id"] == created["id"])
    assert saved["track_ids"] == track_ids and saved["public"] is False


def test_250_tracks_are_added_in_chunks_of_100(stack: Stack, signed_in: SignedIn) -> None:
    browser = signed_in("demo")
    before = stack.request_counts()
    response = browser.post(
        "/api/v1/spotify/playlists",
        json={"name": "Long", "track_ids": stack.catalog_ids[:250]},
    )
    assert response.status_code == 201, response.text
    assert response.json()["added"] == 250
    after = stack.request_counts()
    assert delta(before, after, CREATE) == 1 and delta(before, after, ADD) == 3


def test_same_idempotency_key_creates_nothing_new(stack: Stack, signed_in: SignedIn) -> None:
    browser = signed_in("demo")
    body = {"name": "Once", "public": True, "track_ids": stack.catalog_ids[200:245]}
    key = {"Idempotency-Key": "export-7f3c"}
    first = browser.post("/api/v1/spotify/playlists", json=body, headers=key)
    assert first.status_code == 201, first.text
    before = stack.request_counts()
    again = browser.post("/api/v1/spotify/playlists", json=body, headers=key)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert stack.request_counts() == before  # Spotify was not called at all
    other = browser.post("/api/v1/spotify/playlists", json={**body, "name": "Twice"}, headers=key)
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]


def test_a_429_is_waited_out(stack: Stack, signed_in: SignedIn) -> None:
    browser = signed_in("demo")
    with stack.sandbox_api() as api:
        api.post(
            "/_sandbox/rate-limit",
            json={"path_prefix": "/v1/me/playlists", "count": 1, "retry_after": 1},
        )
    before = stack.request_counts()
    response = browser.post(
        "/api/v1/spotify/playlists", json={"name": "Patient", "track_ids": stack.catalog_ids[:3]}
    )
    assert response.status_code == 201, response.text
    after = stack.request_counts()
    assert delta(before, after, CREATE) == 2  # the 429, then the retry
    assert delta(before, after, ADD) == 1


def test_a_retry_after_over_the_cap_is_a_503_with_retry_after(
    stack: Stack, signed_in: SignedIn
) -> None:
    browser = signed_in("demo")
    with stack.sandbox_api() as api:
        api.post(
            "/_sandbox/rate-limit", json={"path_prefix": "/v1/me", "count": 1, "retry_after": 120}
        )
    response = browser.get("/api/v1/spotify/me")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "120"
    assert "rate-limiting" in response.json()["detail"]


def test_expired_access_token_is_refreshed_transparently(stack: Stack, signed_in: SignedIn) -> None:
    browser = signed_in("demo2")
    # Spotify expires the token early: the call gets a 401, refreshes once, and retries.
    with stack.sandbox_api() as api:
        assert api.post("/_sandbox/expire-tokens", json={"user": "demo2"}).json()["expired"]
    before = stack.request_counts()
    me = browser.get("/api/v1/spotify/me")
    assert me.status_code == 200, me.text
    assert me.json()["id"] == "demo2"
    after = stack.request_counts()
    assert delta(before, after, TOKEN) == 1 and delta(before, after, "GET /v1/me") == 2

    # Our own record says it expired: refreshed before calling, no 401 round trip.
    engine = sa.create_engine(stack.spotify_db_url)
    with engine.begin() as conn:
        conn.execute(
            spotify_tokens.update()
            .where(spotify_tokens.c.listener_id == "demo2")
            .values(expires_at=0)
        )
    engine.dispose()
    before = stack.request_counts()
    assert browser.get("/api/v1/spotify/me").status_code == 200
    after = stack.request_counts()
    assert delta(before, after, TOKEN) == 1 and delta(before, after, "GET /v1/me") == 1


def test_stored_tokens_are_not_readable_in_the_database(stack: Stack, signed_in: SignedIn) -> None:
    signed_in("demo")
    with stack.sandbox_api() as api:
        issued = api.get("/_sandbox/tokens", params={"user": "demo"}).json()
    assert issued["refresh_tokens"] and issued["access_tokens"]
    engine = sa.create_engine(stack.spotify_db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM spotify_tokens")).all()
    engine.dispose()
    dump = repr(rows)
    assert any(row.listener_id == "demo" for row in rows)
    for token in issued["refresh_tokens"] + issued["access_tokens"]:
        assert token not in dump


def test_two_listeners_at_once(stack: Stack, signed_in: SignedIn) -> None:
    first, second = signed_in("demo"), signed_in("demo2")
    assert first.get("/api/v1/spotify/me").json()["id"] == "demo"
    assert second.get("/api/v1/spotify/me").json()["id"] == "demo2"
    latest = second.get("/api/v1/spotify/me/latest-added").json()["song"]
    assert latest["in_catalog"] is False  # demo2 liked a song the catalog lacks last
    assert first.get("/api/v1/spotify/me/latest-added").json()["song"]["in_catalog"] is True

    # A GET (a link, an <img>, a prefetch) does not sign anyone out.
    assert first.get("/api/v1/spotify/logout").status_code == 405
    assert first.get("/api/v1/spotify/me").json()["id"] == "demo"
    old_cookie = first.cookies[SESSION_COOKIE]
    signed_out = first.post("/api/v1/spotify/logout")
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == f"{DASHBOARD}?spotify=signed_out"
    assert SESSION_COOKIE not in first.cookies
    assert first.get("/api/v1/spotify/me").status_code == 401
    assert second.get("/api/v1/spotify/me").json()["id"] == "demo2"
    # The signed-out cookie, kept by someone who copied it, no longer opens the gateway.
    with stack.browser() as replay:
        replay.cookies.set(SESSION_COOKIE, old_cookie)
        assert replay.get("/api/v1/catalog").status_code == 401
        assert replay.get("/api/v1/spotify/me").status_code == 401
