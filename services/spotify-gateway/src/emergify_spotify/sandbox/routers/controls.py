"""Test controls under ``/_sandbox`` (inject 429s, count requests, expire tokens, inspect
what was stored) and ``/health``. Spotify has none of these."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from emergify_spotify.sandbox.deps import State
from emergify_spotify.sandbox.state import RateLimit

router = APIRouter(tags=["sandbox"])


class RateLimitBody(BaseModel):
    path_prefix: str = Field("/v1/", description="Requests whose path starts with this...")
    count: int = Field(1, ge=1, description="...are answered 429 this many times...")
    retry_after: int = Field(1, ge=0, description="...with this Retry-After (seconds).")


class ExpireBody(BaseModel):
    user: str | None = Field(None, description="Only this listener's tokens (default: all).")


@router.post("/_sandbox/rate-limit")
def rate_limit(body: RateLimitBody, state: State) -> dict[str, Any]:
    """Answer the next ``count`` requests under ``path_prefix`` with 429."""
    with state.lock:
        state.rate_limits.append(RateLimit(body.path_prefix, body.count, body.retry_after))
    return body.model_dump()


@router.get("/_sandbox/requests")
def requests_seen(state: State) -> dict[str, dict[str, int]]:
    """Requests received per endpoint (``"POST /v1/me/playlists": 1``)."""
    with state.lock:
        return {"counts": dict(state.requests)}


@router.delete("/_sandbox/requests")
def reset_requests(state: State) -> dict[str, dict[str, int]]:
    with state.lock:
        state.requests.clear()
    return {"counts": {}}


@router.post("/_sandbox/expire-tokens")
def expire_tokens(body: ExpireBody, state: State) -> dict[str, int]:
    """Expire access tokens now (the client still believes them valid)."""
    expired = 0
    with state.lock:
        for grant in state.access_tokens.values():
            if body.user in (None, grant.user) and grant.expires_at > 0:
                grant.expires_at = 0
                expired += 1
    return {"expired": expired}


@router.get("/_sandbox/tokens")
def tokens(user: str, state: State) -> dict[str, list[str]]:
    """The live tokens of ``user`` (tests check they are not stored in clear)."""
    with state.lock:
        return {
            "access_tokens": [t for t, g in state.access_tokens.items() if g.user == user],
            "refresh_tokens": [t for t, g in state.refresh_tokens.items() if g.user == user],
        }


@router.get("/_sandbox/users/{user}/playlists")
def user_playlists(user: str, state: State) -> dict[str, Any]:
    with state.lock:
        mine = [p for p in state.playlists.values() if p.owner == user]
        return {
            "items": [
                {
                    "id": p.id,
                    "name": p.name,
                    "public": p.public,
                    "track_ids": [i for i, _ in p.items],
                }
                for p in mine
            ]
        }


@router.get("/_sandbox/users")
def users(state: State) -> dict[str, Any]:
    """The demo listeners and their liked songs."""
    return {
        "items": [
            {
                "id": u.id,
                "display_name": u.display_name,
                "liked_track_ids": [t.id for t, _ in u.liked],
            }
            for u in state.listeners.values()
        ]
    }


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok", "service": "spotify-sandbox"}
