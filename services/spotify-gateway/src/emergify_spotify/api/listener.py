"""The signed-in listener: GET /api/v1/spotify/me and /me/*."""

from __future__ import annotations

import random
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from emergify_contracts.problems import problem_responses
from emergify_spotify import listener
from emergify_spotify.api.deps import CatalogDep, ListenerApi, ReadyServices
from emergify_spotify.schemas import Favourite, LatestAdded, LikedSongs, Profile, TopArtists

router = APIRouter(prefix="/api/v1/spotify/me", tags=["spotify"])
_ERRORS = problem_responses(401, 403, 502, 503)
# Routes with query parameters: an invalid one is a 422 problem (not FastAPI's default body).
_QUERY_ERRORS = problem_responses(401, 403, 422, 502, 503)


@router.get("", response_model=Profile, name="me", summary="Who is signed in", responses=_ERRORS)
def read_me(api: ListenerApi) -> Profile:
    """The listener's Spotify id, display name and pictures."""
    return listener.profile(api)


@router.get(
    "/top-artists",
    response_model=TopArtists,
    name="top_artists",
    summary="The listener's top artists",
    responses=_QUERY_ERRORS,
)
def read_top_artists(
    api: ListenerApi,
    limit: Annotated[int, Query(ge=1, le=50, description="How many artists.")] = 10,
    time_range: Annotated[
        Literal["short_term", "medium_term", "long_term"],
        Query(description="About 4 weeks, 6 months, or a year."),
    ] = "medium_term",
) -> TopArtists:
    """Most-listened artists with genres and images."""
    return listener.top_artists(api, limit, time_range)


@router.get(
    "/latest-added",
    response_model=LatestAdded,
    name="latest_added",
    summary="The newest liked song",
    responses={**_ERRORS, **problem_responses(404)},
)
def read_latest_added(api: ListenerApi, catalog: CatalogDep) -> LatestAdded:
    """The song the listener liked last, with when, and whether the catalog knows it."""
    return LatestAdded(song=listener.latest_added(api, catalog))


@router.get(
    "/liked",
    response_model=LikedSongs,
    name="liked",
    summary="Liked songs, marked with whether the catalog knows them",
    responses=_QUERY_ERRORS,
)
def read_liked(
    api: ListenerApi,
    catalog: CatalogDep,
    limit: Annotated[int, Query(ge=1, le=200, description="How many songs.")] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000, description="Songs to skip.")] = 0,
) -> LikedSongs:
    """Newest first; `in_catalog` tells which ones can seed recommendations."""
    return listener.liked(api, catalog, limit, offset)


@router.get(
    "/favourite",
    response_model=Favourite,
    name="favourite",
    summary="A random liked song with its audio features",
    responses={**_ERRORS, **problem_responses(404, 422)},
)
def read_favourite(api: ListenerApi, catalog: CatalogDep, services: ReadyServices) -> Favourite:
    """Features come from Emergify's catalog; if it knows none of the liked songs, Spotify's
    /audio-features is tried, and when Spotify refuses (as for new apps) the answer is a 422
    suggesting a catalog song instead."""
    return listener.favourite(api, catalog, services.settings.liked_scan_limit, random.Random())
