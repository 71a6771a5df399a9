"""Spotify sign-in: authorization code with PKCE (S256) and a one-time ``state`` (RFC 9700).

``begin_sign_in`` stores a fresh state with its code verifier (encrypted) for
``oauth_state_ttl_seconds`` and builds the authorize URL; ``finish_sign_in`` consumes the state
(exactly once), exchanges the code with the verifier and the client credentials, reads who
signed in from ``/v1/me`` and stores their tokens.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import requests
import spotipy
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from emergify_contracts.problems import ProblemError
from emergify_contracts.spotify_tables import oauth_states
from emergify_spotify.config import SCOPES, Settings
from emergify_spotify.tokens import TokenCipher, TokenStore


def new_code_verifier() -> str:
    """A PKCE code verifier: 64 random bytes, base64url (86 chars, within RFC 7636's 43..128)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of ``verifier``: base64url(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class StateStore:
    """One-time ``state`` values of sign-ins in progress, each with its PKCE verifier."""

    def __init__(self, engine: Engine, cipher: TokenCipher) -> None:
        self.engine = engine
        self.cipher = cipher

    def create(self, verifier: str, ttl_seconds: int) -> str:
        """Store a new state for ``verifier``; expired states are swept on the way."""
        state = secrets.token_urlsafe(32)
        now = int(time.time())
        with self.engine.begin() as conn:
            conn.execute(oauth_states.delete().where(oauth_states.c.expires_at <= now))
            conn.execute(
                oauth_states.insert().values(
                    state=state,
                    code_verifier=self.cipher.encrypt(verifier),
                    expires_at=now + ttl_seconds,
                )
            )
        return state

    def consume(self, state: str) -> str | None:
        """The verifier of ``state`` if it is known and unexpired; the state is gone afterwards
        either way, so it can never be used twice (of two racing callbacks, one wins)."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(oauth_states).where(oauth_states.c.state == state)).first()
            if row is None:
                return None
            deleted = conn.execute(
                oauth_states.delete().where(oauth_states.c.state == state)
            ).rowcount
        if deleted != 1 or row.expires_at <= time.time():
            return None
        return self.cipher.decrypt(row.code_verifier)


def authorize_url(settings: Settings, state: str, challenge: str) -> str:
    """Where to send the browser to sign in with Spotify."""
    query = urlencode(
        {
            "client_id": settings.spotify_client_id,
            "response_type": "code",
            "redirect_uri": settings.spotify_redirect_uri,
            "scope": SCOPES,
            "state": state,
            "code_challenge_method": "S256",
            "code_challenge": challenge,
        }
    )
    return f"{settings.spotify_accounts_url.rstrip('/')}/authorize?{query}"


def begin_sign_in(settings: Settings, states: StateStore) -> tuple[str, str]:
    """(authorize URL, state) of a new sign-in."""
    verifier = new_code_verifier()
    state = states.create(verifier, settings.oauth_state_ttl_seconds)
    return authorize_url(settings, state, code_challenge(verifier)), state


@dataclass(frozen=True)
class SignedIn:
    """Who signed in (their tokens are stored, not returned)."""

    listener_id: str
    display_name: str | None


def exchange_code(settings: Settings, code: str, verifier: str) -> dict[str, Any]:
    """Trade the authorization code for tokens at ``{accounts_url}/api/token``."""
    assert settings.spotify_client_id and settings.spotify_client_secret
    try:
        response = httpx.post(
            f"{settings.spotify_accounts_url.rstrip('/')}/api/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": settings.spotify_redirect_uri,
                "code_verifier": verifier,
            },
            auth=(settings.spotify_client_id, settings.spotify_client_secret.get_secret_value()),
            timeout=settings.spotify_timeout_seconds,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        raise ProblemError(
            502, f"could not reach Spotify's accounts service: {type(exc).__name__}"
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or not {"access_token", "refresh_token"} <= body.keys():
        error = body.get("error", f"HTTP {response.status_code}")
        description = body.get("error_description", "")
        if error == "invalid_grant":
            raise ProblemError(
                400,
                f"Spotify refused the sign-in code ({description or error}); it may have "
                "expired or been used already: sign in again from GET /api/v1/spotify/login",
                spotify_error=error,
            )
        raise ProblemError(
            502,
            f"Spotify's accounts service refused the code exchange: {error}: {description}. "
            "Check EMERGIFY_SPOTIFY_CLIENT_ID, EMERGIFY_SPOTIFY_CLIENT_SECRET and that "
            "EMERGIFY_SPOTIFY_REDIRECT_URI is registered with the app.",
            spotify_error=error,
        )
    return body


def read_profile(settings: Settings, access_token: str) -> dict[str, Any]:
    """``GET /v1/me`` with a fresh access token: who just signed in."""
    client = spotipy.Spotify(
        auth=access_token,
        requests_session=requests.Session(),
        requests_timeout=settings.spotify_timeout_seconds,
    )
    client.prefix = settings.spotify_api_url.rstrip("/") + "/"
    try:
        return client.me()
    except spotipy.SpotifyException as exc:
        raise ProblemError(
            502 if exc.http_status >= 500 else exc.http_status,
            f"Spotify refused to say who signed in: {str(exc.msg).rsplit(':', 1)[-1].strip()}",
        ) from None
    except requests.RequestException as exc:
        raise ProblemError(502, f"could not reach Spotify: {type(exc).__name__}") from None


def finish_sign_in(
    settings: Settings, states: StateStore, tokens: TokenStore, code: str, state: str
) -> SignedIn:
    """Check ``state``, exchange ``code``, store the listener's tokens."""
    verifier = states.consume(state)
    if verifier is None:
        raise ProblemError(
            400,
            "the sign-in state is unknown, expired or already used; start again from "
            "GET /api/v1/spotify/login",
            title="Invalid sign-in state",
        )
    token_info = exchange_code(settings, code, verifier)
    profile = read_profile(settings, token_info["access_token"])
    token_info["expires_at"] = int(time.time()) + int(token_info.get("expires_in", 3600))
    token_info["scope"] = token_info.get("scope") or SCOPES
    tokens.save(profile["id"], token_info)
    return SignedIn(listener_id=profile["id"], display_name=profile.get("display_name"))
