"""The authorization-code flow's rules: which authorize requests may go on to consent, codes,
and the tokens a code or refresh token is exchanged for."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from emergify_spotify.sandbox.state import Grant, SandboxState

KNOWN_SCOPES = frozenset(
    {
        "user-library-read",
        "user-library-modify",
        "user-top-read",
        "user-read-private",
        "user-read-email",
        "playlist-read-private",
        "playlist-read-collaborative",
        "playlist-modify-private",
        "playlist-modify-public",
    }
)
CODE_TTL_SECONDS = 600


def _with_state(query: dict[str, str], params: dict[str, str]) -> dict[str, str]:
    return {**query, **({"state": params["state"]} if "state" in params else {})}


def redirect_back(params: dict[str, str], **query: str) -> RedirectResponse:
    """Back to the client's redirect URI with ``query`` (and the client's ``state``)."""
    return RedirectResponse(
        f"{params['redirect_uri']}?{urlencode(_with_state(query, params))}", status_code=303
    )


def check_authorize(state: SandboxState, params: dict[str, str]) -> Response | None:
    """None when the request may go on to consent; else the answer Spotify would give."""
    settings = state.settings
    if params.get("client_id") != settings.spotify_sandbox_client_id:
        return HTMLResponse("<h1>INVALID_CLIENT: Invalid client</h1>", status_code=400)
    if params.get("redirect_uri", "") not in settings.spotify_sandbox_redirect_uris:
        return HTMLResponse("<h1>INVALID_CLIENT: Invalid redirect URI</h1>", status_code=400)
    if params.get("response_type") != "code":
        return redirect_back(params, error="unsupported_response_type")
    challenge = params.get("code_challenge")
    if challenge is not None or "code_challenge_method" in params:
        if params.get("code_challenge_method") != "S256":
            return redirect_back(params, error="invalid_request")
        if not challenge or not re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge):
            return redirect_back(params, error="invalid_request")
    if not set(params.get("scope", "").split()) <= KNOWN_SCOPES:
        return redirect_back(params, error="invalid_scope")
    return None


def grant_code(state: SandboxState, params: dict[str, str], user: str) -> RedirectResponse:
    """Issue an authorization code for ``user`` and send the browser back with it."""
    code = secrets.token_urlsafe(32)
    with state.lock:
        state.codes[code] = Grant(
            user=user,
            client_id=params["client_id"],
            scope=params.get("scope", ""),
            expires_at=time.time() + CODE_TTL_SECONDS,
            redirect_uri=params["redirect_uri"],
            challenge=params.get("code_challenge"),
        )
    return redirect_back(params, code=code)


def issue_tokens(state: SandboxState, grant: Grant, refresh_token: str | None) -> dict[str, Any]:
    """A token response for ``grant``; a new refresh token unless refreshing without rotation."""
    access = secrets.token_urlsafe(48)
    lifetime = state.settings.spotify_sandbox_access_token_seconds
    with state.lock:
        state.access_tokens[access] = Grant(
            grant.user, grant.client_id, grant.scope, expires_at=time.time() + lifetime
        )
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "scope": grant.scope,
            "expires_in": lifetime,
        }
        if refresh_token is None or state.settings.spotify_sandbox_rotate_refresh_tokens:
            if refresh_token is not None:
                state.refresh_tokens.pop(refresh_token, None)
            new_refresh = secrets.token_urlsafe(48)
            state.refresh_tokens[new_refresh] = Grant(grant.user, grant.client_id, grant.scope)
            body["refresh_token"] = new_refresh
    return body
