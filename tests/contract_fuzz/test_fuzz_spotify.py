"""Schemathesis against the spotify-gateway, signed in to the Spotify sandbox, and against the
sandbox's own OpenAPI document.

The sandbox and a recommender over the sample catalog are served by uvicorn (the
spotify-gateway calls them over HTTP); the spotify-gateway runs in-process, its tokens in
SQLite. The fuzz sends a signed-in listener's session cookie, so the /me routes and playlist
export run against the sandbox, not only their 401s. Documented redirects (login, callback,
logout) are the responses under test, not followed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import schemathesis
from catalog_fixtures import seed_catalog
from contract_fuzz.fuzz_kit import (
    STAND_IN_CHECKS,
    fuzz_operations,
    recommender_app,
    sandbox_settings,
    spotify_app,
    stop_lifespans,
    wait_healthy,
)
from schemathesis.python import asgi as schemathesis_asgi
from servers import serving

from emergify_cli.broker import free_port
from emergify_contracts.session import SESSION_COOKIE
from emergify_spotify.sandbox.app import create_app as create_sandbox
from emergify_spotify.sandbox.config import SandboxSettings
from emergify_spotify.sandbox.oauth import KNOWN_SCOPES

LOGOUT = "POST /api/v1/spotify/logout"


@dataclass
class SignedIn:
    """The spotify-gateway's schema and the cookie of a listener signed in through it."""

    schema: schemathesis.BaseSchema
    cookie: dict[str, str]


def sign_in(app: object) -> dict[str, str]:
    """Sign the demo listener in through the in-process app; the session cookie header."""
    with schemathesis_asgi.get_client(app) as client:  # type: ignore[arg-type]
        login = client.get("/api/v1/spotify/login", allow_redirects=False)
        assert login.status_code == 302, login.text
        authorize = httpx.get(f"{login.headers['location']}&login_hint=demo")
        assert authorize.status_code == 303, authorize.text
        back = urlsplit(authorize.headers["location"])  # the callback, on this app
        callback = client.get(f"{back.path}?{back.query}", allow_redirects=False)
        assert callback.status_code == 302, callback.text
        session = client.cookies.get(SESSION_COOKIE)
    assert session, "the callback set no session cookie"
    return {"Cookie": f"{SESSION_COOKIE}={session}"}


@pytest.fixture(scope="module")
def signed_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignedIn]:
    folder = tmp_path_factory.mktemp("fuzz-spotify")
    catalog_url = f"sqlite:///{folder / 'catalog.db'}"
    seed_catalog(catalog_url)
    sandbox_port = free_port()
    # Spotify sends the listener back here; the test calls that path on the in-process app.
    callback = f"http://127.0.0.1:{free_port()}/api/v1/spotify/callback"
    settings = sandbox_settings(f"http://127.0.0.1:{sandbox_port}", callback)
    with serving() as serve:
        serve(create_sandbox(settings), sandbox_port)
        recommender = serve(recommender_app(catalog_url))
        app = spotify_app(folder, settings, recommender.url)
        wait_healthy(app)
        yield SignedIn(schemathesis.openapi.from_asgi("/openapi.json", app), sign_in(app))
        stop_lifespans()


def test_spotify_gateway_api(signed_in: SignedIn) -> None:
    # Sign-out forgets the listener's tokens: fuzz it after everything else.
    labels = {result.ok().label for result in signed_in.schema.get_all_operations()}
    fuzzed = fuzz_operations(signed_in.schema, skip=frozenset({LOGOUT}), headers=signed_in.cookie)
    fuzzed |= fuzz_operations(
        signed_in.schema, skip=frozenset(labels - {LOGOUT}), headers=signed_in.cookie
    )
    assert set(fuzzed) == labels
    # Signed in, the listener's routes answered from the sandbox (not only 401s).
    for label in ("GET /api/v1/spotify/me", "GET /api/v1/spotify/me/liked"):
        assert fuzzed[label][200], (label, fuzzed[label])
    assert fuzzed["POST /api/v1/spotify/playlists"][201], fuzzed["POST /api/v1/spotify/playlists"]


def sandbox_token(app: object, settings: SandboxSettings) -> dict[str, str]:
    """An access token of the demo listener with every scope, from the sandbox's own OAuth
    endpoints (authorization code with the client secret); the Authorization header."""
    redirect_uri = settings.spotify_sandbox_redirect_uris[0]
    with schemathesis_asgi.get_client(app) as client:  # type: ignore[arg-type]
        authorize = client.get(
            "/authorize",
            params={
                "client_id": settings.spotify_sandbox_client_id,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": " ".join(sorted(KNOWN_SCOPES)),
            },
            allow_redirects=False,
        )
        assert authorize.status_code == 303, authorize.text
        code = parse_qs(urlsplit(authorize.headers["location"]).query)["code"][0]
        token = client.post(
            "/api/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": settings.spotify_sandbox_client_id,
                "client_secret": settings.spotify_sandbox_client_secret.get_secret_value(),
            },
        )
        assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def test_spotify_sandbox_api() -> None:
    settings = sandbox_settings(
        f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}/callback"
    )
    app = create_sandbox(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        fuzzed = fuzz_operations(
            schema, headers=sandbox_token(app, settings), checks=STAND_IN_CHECKS
        )
    finally:
        stop_lifespans()
    assert {"POST /api/token", "POST /_sandbox/rate-limit"} <= set(fuzzed)
    assert fuzzed["GET /v1/me/tracks"][200], fuzzed["GET /v1/me/tracks"]
