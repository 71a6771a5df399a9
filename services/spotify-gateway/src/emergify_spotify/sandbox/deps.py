"""Request dependencies shared by the routers: the state, Spotify's object builder, the
signed-in listener and Web API argument checks."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, Request

from emergify_spotify.sandbox.listeners import Listener
from emergify_spotify.sandbox.state import SandboxState
from emergify_spotify.sandbox.wire import ApiError, SpotifyObjects


def sandbox_state(request: Request) -> SandboxState:
    """The app's state (set by ``create_app``)."""
    return request.app.state.sandbox


def spotify_objects(request: Request) -> SpotifyObjects:
    """The app's object builder (set by ``create_app``)."""
    return request.app.state.spotify_objects


State = Annotated[SandboxState, Depends(sandbox_state)]
Objects = Annotated[SpotifyObjects, Depends(spotify_objects)]


def bearer(request: Request, scope: str | None = None) -> Listener:
    """The listener whose access token the request carries; ``scope`` is ``a|b`` for either.

    Raises 401 without a live token, 403 when the token lacks the scope."""
    state = sandbox_state(request)
    scheme, _, access = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not access:
        raise ApiError(401, "No token provided")
    with state.lock:
        grant = state.access_tokens.get(access)
    if grant is None:
        raise ApiError(401, "Invalid access token")
    if grant.expires_at <= time.time():
        raise ApiError(401, "The access token expired")
    if scope is not None and not set(scope.split("|")) & set(grant.scope.split()):
        raise ApiError(403, "Insufficient client scope")
    return state.listeners[grant.user]


def check_paging(limit: int, offset: int, most: int = 50) -> None:
    """Spotify's 400 for a limit outside 1..``most`` or a negative offset."""
    if not 1 <= limit <= most:
        raise ApiError(400, "Invalid limit")
    if offset < 0:
        raise ApiError(400, "Invalid offset")


async def json_body(request: Request) -> Any:
    """The request's JSON body, or Spotify's 400 when it does not parse."""
    try:
        return await request.json()
    except ValueError:
        raise ApiError(400, "Error parsing JSON.") from None
