"""The spotify-gateway app.

This version answers every Spotify route with 503 and the settings to set: sign-in, the
listener's profile and playlist export are the next piece of work (issue 3), and until
they exist the honest answer is "not available", not a fake profile.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from emergify_spotify.config import Settings, get_settings

PROBLEM = "application/problem+json"


class Health(BaseModel):
    status: str
    service: str
    spotify_configured: bool


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0] if route.tags else 'default'}-{route.name}"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` defaults to the environment's."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Emergify spotify-gateway",
        version="0.1.0",
        generate_unique_id_function=_operation_id,
    )

    @app.get("/health", response_model=Health, tags=["health"])
    async def health() -> Health:
        return Health(
            status="ok", service="spotify-gateway", spotify_configured=settings.spotify_configured
        )

    def unavailable(request: Request) -> JSONResponse:
        if not settings.spotify_configured:
            detail = (
                "Spotify is not configured: set EMERGIFY_SPOTIFY_CLIENT_ID and "
                "EMERGIFY_SPOTIFY_CLIENT_SECRET (and EMERGIFY_SPOTIFY_REDIRECT_URI)."
            )
        else:
            detail = "Spotify sign-in is not implemented in this version of Emergify."
        return JSONResponse(
            Problem(title="Spotify unavailable", status=503, detail=detail).model_dump(),
            status_code=503,
            media_type=PROBLEM,
            headers={"Retry-After": "3600"},
        )

    responses = {503: {"model": Problem, "description": "Spotify is not available."}}
    for path, name in [
        ("/api/v1/spotify/login", "login"),
        ("/api/v1/spotify/callback", "callback"),
        ("/api/v1/spotify/logout", "logout"),
        ("/api/v1/spotify/me", "me"),
        ("/api/v1/spotify/me/top-artists", "top_artists"),
        ("/api/v1/spotify/me/latest-added", "latest_added"),
        ("/api/v1/spotify/me/favourite", "favourite"),
    ]:
        app.add_api_route(
            path,
            unavailable,
            methods=["GET"],
            name=name,
            tags=["spotify"],
            responses=responses,
            response_class=JSONResponse,
        )
    app.add_api_route(
        "/api/v1/spotify/playlists",
        unavailable,
        methods=["POST"],
        name="create_playlist",
        tags=["spotify"],
        responses=responses,
        response_class=JSONResponse,
    )
    return app
