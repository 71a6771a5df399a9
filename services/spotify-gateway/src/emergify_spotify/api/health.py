"""GET /health."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from emergify_spotify.api.deps import AppServices
from emergify_spotify.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    name="health",
    summary="Readiness of the spotify-gateway",
    responses={503: {"model": Health, "description": "The database is not usable."}},
)
def health(services: AppServices) -> JSONResponse:
    """200 whether or not Spotify is configured (the rest of Emergify works without it);
    503 only when the database it keeps tokens in is unusable."""
    settings = services.settings
    body = Health(
        status="degraded" if services.database_error else "ok",
        spotify_configured=settings.spotify_configured,
        missing_settings=settings.missing_settings(),
        sandbox=settings.spotify_sandbox,
        detail=services.database_error,
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=503 if services.database_error else 200
    )
