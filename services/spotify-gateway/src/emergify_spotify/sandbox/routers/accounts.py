"""Spotify's accounts service: ``/authorize`` (GET; the form's POST is in ``consent``) and
``/api/token``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from emergify_spotify.sandbox.deps import State
from emergify_spotify.sandbox.oauth import check_authorize, grant_code, issue_tokens
from emergify_spotify.sandbox.routers.consent import consent_page
from emergify_spotify.sandbox.wire import oauth_error

router = APIRouter(tags=["accounts"])


@router.get("/authorize", response_model=None, include_in_schema=True)
def authorize(request: Request, state: State) -> Response:
    """Spotify's authorize page: a consent page, or straight back with auto-approve.
    ``login_hint`` (sandbox only) picks the demo listener."""
    params = dict(request.query_params)
    refusal = check_authorize(state, params)
    if refusal is not None:
        return refusal
    chosen = params.pop("login_hint", "demo")
    if chosen not in state.listeners:
        chosen = "demo"
    if state.settings.spotify_sandbox_auto_approve:
        return grant_code(state, params, chosen)
    return HTMLResponse(consent_page(params, list(state.listeners.values()), chosen))


@router.post("/api/token", response_model=None)
def token(
    request: Request,
    state: State,
    grant_type: Annotated[str, Form()] = "",
    code: Annotated[str | None, Form()] = None,
    redirect_uri: Annotated[str | None, Form()] = None,
    code_verifier: Annotated[str | None, Form()] = None,
    refresh_token: Annotated[str | None, Form()] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    """Spotify's token endpoint: authorization_code (with PKCE) and refresh_token."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, client_secret = base64.b64decode(credentials).decode().partition(":")
        except ValueError:
            return oauth_error("invalid_client", "Invalid client")
    if client_id != state.settings.spotify_sandbox_client_id:
        return oauth_error("invalid_client", "Invalid client")
    if client_secret is not None and not hmac.compare_digest(
        client_secret.encode(),
        state.settings.spotify_sandbox_client_secret.get_secret_value().encode(),
    ):
        return oauth_error("invalid_client", "Invalid client secret")
    if grant_type == "authorization_code":
        with state.lock:
            grant = state.codes.pop(code or "", None)  # a code works once
        if grant is None or grant.expires_at < time.time():
            return oauth_error("invalid_grant", "Invalid authorization code")
        if grant.client_id != client_id:
            return oauth_error("invalid_grant", "Invalid authorization code")
        if redirect_uri != grant.redirect_uri:
            return oauth_error("invalid_grant", "Invalid redirect URI")
        if grant.challenge is not None:
            if not code_verifier:
                return oauth_error("invalid_request", "code_verifier required")
            digest = hashlib.sha256(code_verifier.encode()).digest()
            expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if not hmac.compare_digest(expected, grant.challenge):
                return oauth_error("invalid_grant", "code_verifier was incorrect")
        elif client_secret is None:
            return oauth_error("invalid_client", "Invalid client secret")
        return JSONResponse(issue_tokens(state, grant, None))
    if grant_type == "refresh_token":
        with state.lock:
            grant = state.refresh_tokens.get(refresh_token or "")
        if grant is None or grant.client_id != client_id:
            return oauth_error("invalid_grant", "Invalid refresh token")
        return JSONResponse(issue_tokens(state, grant, refresh_token))
    return oauth_error("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
