"""Spotify's Web API (``/v1/...``): the endpoints Emergify calls, and 403 for the ones Spotify
removed in February 2026."""

from __future__ import annotations

import re
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from emergify_spotify.sandbox.deps import Objects, State, bearer, check_paging, json_body
from emergify_spotify.sandbox.listeners import TIME_RANGES, Listener, top_artists, top_tracks
from emergify_spotify.sandbox.state import Playlist, SandboxState
from emergify_spotify.sandbox.wire import ApiError, api_error

MAX_URIS_PER_ADD = 100
_ID = re.compile(r"^[0-9A-Za-z]{22}$")
_TRACK_URI = re.compile(r"^spotify:track:([0-9A-Za-z]{22})$")

router = APIRouter(tags=["web api"])
# Endpoints Spotify removed in February 2026: they answer 403 as Spotify does, so a
# regression fails tests.
removed = APIRouter(tags=["removed"])


@router.get("/v1/me/", include_in_schema=False)  # spotipy's me() asks for "me/"
@router.get("/v1/me")
def me(request: Request, objects: Objects) -> dict[str, Any]:
    return objects.user(bearer(request))


def _top_listener(request: Request, limit: int, offset: int, time_range: str) -> Listener:
    """The listener asking for their top items, after Spotify's checks of the request."""
    listener = bearer(request, "user-top-read")
    check_paging(limit, offset)
    if time_range not in TIME_RANGES:
        raise ApiError(400, "Invalid time range")
    return listener


@router.get("/v1/me/top/artists")
def top(
    request: Request,
    objects: Objects,
    limit: int = 20,
    offset: int = 0,
    time_range: str = "medium_term",
) -> dict[str, Any]:
    listener = _top_listener(request, limit, offset, time_range)
    artists = [objects.artist(a) for a in top_artists(listener)]
    return objects.page(artists, limit, offset, "/v1/me/top/artists", time_range=time_range)


@router.get("/v1/me/top/tracks")
def top_tracks_of(
    request: Request,
    objects: Objects,
    limit: int = 20,
    offset: int = 0,
    time_range: str = "medium_term",
) -> dict[str, Any]:
    listener = _top_listener(request, limit, offset, time_range)
    tracks = [objects.track(t) for t in top_tracks(listener, time_range)]
    return objects.page(tracks, limit, offset, "/v1/me/top/tracks", time_range=time_range)


@router.get("/v1/me/playlists")
def my_playlists(
    request: Request, state: State, objects: Objects, limit: int = 20, offset: int = 0
) -> dict[str, Any]:
    listener = bearer(request, "playlist-read-private")
    check_paging(limit, offset)
    with state.lock:
        own = [p for p in state.playlists.values() if p.owner == listener.id]
    return objects.page(
        [objects.simplified_playlist(p) for p in own], limit, offset, "/v1/me/playlists"
    )


@router.get("/v1/me/tracks")
def saved_tracks(
    request: Request, objects: Objects, limit: int = 20, offset: int = 0
) -> dict[str, Any]:
    listener = bearer(request, "user-library-read")
    check_paging(limit, offset)
    items = [{"added_at": at, "track": objects.track(t)} for t, at in listener.liked]
    return objects.page(items, limit, offset, "/v1/me/tracks")


@router.get("/v1/audio-features")
def audio_features(
    request: Request, state: State, objects: Objects, ids: str = ""
) -> dict[str, Any]:
    bearer(request)
    if not state.settings.spotify_sandbox_allow_audio_features:
        # What new and development-mode apps get since 27 Nov 2024.
        raise ApiError(403, "Forbidden")
    wanted = [i for i in ids.split(",") if i]
    if not wanted or len(wanted) > 100 or not all(_ID.match(i) for i in wanted):
        raise ApiError(400, "Invalid ids")
    out: list[dict[str, Any] | None] = []
    for track_id in wanted:
        track = state.tracks.get(track_id)
        if track is None or track.features is None:
            out.append(None)
            continue
        out.append(
            {
                "id": track_id,
                "type": "audio_features",
                "uri": f"spotify:track:{track_id}",
                "track_href": f"{objects.base}/v1/tracks/{track_id}",
                "duration_ms": track.duration_ms,
                **track.features,
            }
        )
    return {"audio_features": out}


@router.post("/v1/me/playlists", status_code=201)
async def create_playlist(request: Request, state: State, objects: Objects) -> JSONResponse:
    body = await json_body(request)
    if not isinstance(body, dict) or not body.get("name"):
        raise ApiError(400, "Missing required field: name")
    public = bool(body.get("public", True))
    listener = bearer(request, "playlist-modify-public" if public else "playlist-modify-private")
    playlist = Playlist(
        id=secrets.token_hex(11),
        owner=listener.id,
        name=str(body["name"]),
        description=str(body.get("description") or ""),
        public=public,
        collaborative=bool(body.get("collaborative", False)),
    )
    with state.lock:
        state.playlists[playlist.id] = playlist
    return JSONResponse(objects.playlist(playlist), status_code=201)


def own_playlist(state: SandboxState, playlist_id: str, listener: Listener) -> Playlist:
    playlist = state.playlists.get(playlist_id)
    if playlist is None:
        raise ApiError(404, "Resource not found")
    if playlist.owner != listener.id and not playlist.public:
        raise ApiError(403, "Forbidden")
    return playlist


@router.get("/v1/playlists/{playlist_id}")
def get_playlist(
    request: Request, state: State, objects: Objects, playlist_id: str
) -> dict[str, Any]:
    return objects.playlist(own_playlist(state, playlist_id, bearer(request)))


@router.get("/v1/playlists/{playlist_id}/items")
def get_items(
    request: Request,
    state: State,
    objects: Objects,
    playlist_id: str,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    playlist = own_playlist(state, playlist_id, bearer(request))
    check_paging(limit, offset, most=100)
    items = objects.playlist_items(playlist)
    return objects.page(items, limit, offset, f"/v1/playlists/{playlist_id}/items")


@router.post("/v1/playlists/{playlist_id}/items", status_code=201)
async def add_items(
    request: Request,
    state: State,
    objects: Objects,
    playlist_id: str,
    uris: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    listener = bearer(request, "playlist-modify-public|playlist-modify-private")
    playlist = own_playlist(state, playlist_id, listener)
    if playlist.owner != listener.id:
        raise ApiError(403, "You cannot add tracks to a playlist you don't own.")
    position = None
    if uris is not None:
        wanted = uris.split(",")
    else:
        body = await json_body(request)
        if isinstance(body, list):  # spotipy's playlist_add_items sends a bare array
            wanted = body
        elif isinstance(body, dict) and isinstance(body.get("uris"), list):
            wanted, position = body["uris"], body.get("position")
        else:
            raise ApiError(400, "Missing required field: uris")
    if len(wanted) > MAX_URIS_PER_ADD:
        raise ApiError(400, "You can add a maximum of 100 tracks per request.")
    ids = []
    for uri in wanted:
        match = _TRACK_URI.match(str(uri))
        if not match:
            raise ApiError(400, f"Invalid track uri: {uri}")
        ids.append(match.group(1))
    added_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with state.lock:
        at = len(playlist.items) if position is None else int(position)
        playlist.items[at:at] = [(i, added_at) for i in ids]
        playlist.snapshots += 1
    return JSONResponse({"snapshot_id": objects.snapshot(playlist)}, status_code=201)


@router.delete("/v1/playlists/{playlist_id}/items")
async def remove_items(
    request: Request, state: State, objects: Objects, playlist_id: str
) -> dict[str, Any]:
    listener = bearer(request, "playlist-modify-public|playlist-modify-private")
    playlist = own_playlist(state, playlist_id, listener)
    if playlist.owner != listener.id:
        raise ApiError(403, "You cannot remove tracks from a playlist you don't own.")
    body = await json_body(request)
    # Was {"tracks": [...]} before February 2026.
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ApiError(400, "Missing required field: items")
    if len(body["items"]) > MAX_URIS_PER_ADD:
        raise ApiError(400, "You can remove a maximum of 100 tracks per request.")
    ids = set()
    for entry in body["items"]:
        match = _TRACK_URI.match(str(entry.get("uri") if isinstance(entry, dict) else ""))
        if not match:
            raise ApiError(400, f"Invalid track uri: {entry}")
        ids.add(match.group(1))
    with state.lock:
        playlist.items = [(i, at) for i, at in playlist.items if i not in ids]
        playlist.snapshots += 1
    return {"snapshot_id": objects.snapshot(playlist)}


@removed.post("/v1/users/{user_id}/playlists")
def removed_create(user_id: str) -> JSONResponse:
    return api_error(403, "Forbidden")


# One route per method: a route of several methods documents them all under one
# operationId, which OpenAPI forbids.
@removed.get("/v1/playlists/{playlist_id}/tracks")
@removed.post("/v1/playlists/{playlist_id}/tracks")
@removed.put("/v1/playlists/{playlist_id}/tracks")
@removed.delete("/v1/playlists/{playlist_id}/tracks")
def removed_tracks(playlist_id: str) -> JSONResponse:
    return api_error(403, "Forbidden")
