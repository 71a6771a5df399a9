"""POST /api/v1/spotify/playlists: save a playlist in the listener's Spotify account."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from emergify_contracts.problems import problem_responses
from emergify_spotify.api.deps import ListenerApi, ReadyServices
from emergify_spotify.playlist import export_playlist
from emergify_spotify.schemas import PlaylistCreated, PlaylistRequest

router = APIRouter(prefix="/api/v1/spotify", tags=["spotify"])


@router.post(
    "/playlists",
    status_code=201,
    response_model=PlaylistCreated,
    name="create_playlist",
    summary="Create a playlist in the listener's account",
    responses=problem_responses(401, 403, 409, 422, 502, 503),
)
def create_playlist(
    body: PlaylistRequest,
    api: ListenerApi,
    services: ReadyServices,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            description="Makes retries safe: a repeat answers the first result (per listener).",
        ),
    ] = None,
) -> JSONResponse:
    """Create the playlist, then add the tracks in chunks of 100. 201 with id, url, added."""
    assert services.ledger is not None
    result, replayed = export_playlist(api, services.ledger, body, idempotency_key)
    return JSONResponse(
        result.model_dump(mode="json"),
        status_code=201,
        headers={"Idempotent-Replayed": "true"} if replayed else None,
    )
