"""The listener loop on Spotify's side: the listener's playlists, "recommend for me", expanding
a playlist, and living playlists (docs/listener-loop.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from emergify_contracts.listener import LivingPlaylistChange
from emergify_contracts.problems import ProblemError, problem_responses
from emergify_contracts.song import TRACK_ID_RE
from emergify_spotify.api.deps import CatalogDep, ListenerApi, ReadyServices
from emergify_spotify.catalog import Catalog
from emergify_spotify.living import listener_key
from emergify_spotify.living_refresh import rank, refresh, seed_dicts, taste
from emergify_spotify.playlist_sync import playlist_track_ids
from emergify_spotify.recommend import MAX_LIMIT, MAX_WITHIN_LIMIT, Ask, recommend
from emergify_spotify.spotify_api import SpotifyApi
from emergify_spotify.taste import TasteSeed

router = APIRouter(prefix="/api/v1/spotify", tags=["spotify"])
_ERRORS = problem_responses(401, 403, 422, 502, 503)
TrackId = Annotated[str, Field(pattern=TRACK_ID_RE.pattern)]
SpotifyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,64}$")]


class SeedUsed(BaseModel):
    """A seed and why it was chosen."""

    track_id: str
    weight: float = Field(description="In (0, 1]: a seed's distances are divided by it.")
    why: str


class ListenerPlaylist(BaseModel):
    id: str
    name: str
    items_total: int
    in_catalog: int = Field(description="How many of its songs the catalog knows (seeds).")


class ListenerPlaylists(BaseModel):
    items: list[ListenerPlaylist]


class ForMeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(30, ge=1, le=MAX_LIMIT)
    max_popularity: int | None = Field(None, ge=0, le=100)
    max_per_artist: int | None = Field(None, ge=1, le=50)
    include_recent: bool = Field(False, description="Also songs recommended in recent days.")
    max_seeds: int | None = Field(
        None, ge=1, le=50, description="Most seeds drawn from history (default: the setting)."
    )


class ExpandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(
        30,
        ge=1,
        le=MAX_WITHIN_LIMIT,
        description=f"How many songs (at most {MAX_LIMIT} without within_distance).",
    )
    within_distance: float | None = Field(
        None, gt=0, description="Every song within this distance (at most `limit`)."
    )
    max_popularity: int | None = Field(None, ge=0, le=100)
    max_per_artist: int | None = Field(None, ge=1, le=50)
    include_recent: bool = Field(
        False, description="Also songs recommended to the listener lately (skipped otherwise)."
    )

    @model_validator(mode="after")
    def _limit_fits(self) -> ExpandRequest:
        if self.within_distance is None and self.limit > MAX_LIMIT:
            raise ValueError(f"limit above {MAX_LIMIT} needs within_distance")
        return self


class LivingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    size: int = Field(20, ge=1, le=100)
    max_popularity: int | None = Field(None, ge=0, le=100)
    max_per_artist: int = Field(2, ge=1, le=50)
    seeds: list[TrackId] | None = Field(None, min_length=1, max_length=50)
    taste: bool = Field(False, description="Seeds from your Spotify history, re-drawn on refresh.")

    @model_validator(mode="after")
    def _one_seed_kind(self) -> LivingRequest:
        if (self.seeds is None) == (not self.taste):
            raise ValueError("give exactly one of `seeds` (track ids) or `taste: true`")
        return self


def _utc(value: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive; they were written in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


#: A timestamp that always carries its offset (RFC 3339 date-time).
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class LivingSong(BaseModel):
    track_id: str
    distance: float
    added_at: UtcDatetime


class LivingPlaylist(BaseModel):
    id: str
    name: str
    spotify_playlist_id: str | None
    url: str | None
    size: int
    max_popularity: int | None
    max_per_artist: int
    taste: bool
    seeds: list[SeedUsed]
    version: int
    synced_version: int
    songs_added: int
    created_at: UtcDatetime
    last_refresh: UtcDatetime | None
    stopped_at: UtcDatetime | None
    songs: list[LivingSong] | None = None


def _catalog_known(catalog: Catalog, ids: list[str]) -> dict[str, bool]:
    known = catalog.known(ids)
    if known is None:
        raise ProblemError(
            503,
            "the catalog (recommender) cannot say which songs it knows; try again shortly",
            headers={"Retry-After": "5"},
        )
    return known


def _taste(
    api: SpotifyApi, catalog: Catalog, services: ReadyServices, limit: int
) -> list[TasteSeed]:
    return taste(api, catalog, services.settings, limit)


@router.get(
    "/me/playlists",
    response_model=ListenerPlaylists,
    name="my_playlists",
    summary="The listener's Spotify playlists",
    responses=_ERRORS,
)
def my_playlists(api: ListenerApi, catalog: CatalogDep) -> ListenerPlaylists:
    """Each playlist with how many songs it has and how many of them the catalog knows."""
    out: list[ListenerPlaylist] = []
    offset = 0
    while True:
        page = api.call(
            lambda sp, offset=offset: sp.current_user_playlists(limit=50, offset=offset),
            "read your playlists",
        )
        for playlist in page["items"]:
            ids = playlist_track_ids(api, playlist["id"])
            known = _catalog_known(catalog, list(dict.fromkeys(ids)))
            total = (playlist.get("items") or playlist.get("tracks") or {}).get("total")
            out.append(
                ListenerPlaylist(
                    id=playlist["id"],
                    name=playlist["name"],
                    items_total=len(ids) if total is None else total,
                    in_catalog=sum(known.values()),
                )
            )
        offset += len(page["items"])
        if not page.get("next") or not page["items"]:
            return ListenerPlaylists(items=out)


@router.post(
    "/recommendations/for-me",
    name="recommend_for_me",
    summary="Recommendations seeded by the listener's Spotify history",
    responses=_ERRORS,
)
def recommend_for_me(
    body: ForMeRequest, api: ListenerApi, catalog: CatalogDep, services: ReadyServices
) -> dict[str, Any]:
    """Seeds: top tracks (4 weeks, 6 months, all time) and liked songs by recency, restricted
    to catalog songs; the answer is the recommender's plus `seeds_used` with each seed's why."""
    seeds = _taste(api, catalog, services, body.max_seeds or services.settings.taste_max_seeds)
    assert services.recommender is not None
    answer = recommend(
        services.recommender,
        Ask(
            seeds=[s.track_id for s in seeds],
            weights=[s.weight for s in seeds],
            limit=body.limit,
            max_popularity=body.max_popularity,
            max_per_artist=body.max_per_artist,
            include_recent=body.include_recent,
        ),
        api.listener_id,
    )
    answer["seeds_used"] = [SeedUsed(**vars(s)).model_dump() for s in seeds]
    return answer


@router.post(
    "/playlists/{playlist_id}/expand",
    name="expand_playlist",
    summary="Songs like those of one of the listener's playlists",
    responses={**_ERRORS, **problem_responses(404)},
)
def expand_playlist(
    playlist_id: SpotifyId,
    body: ExpandRequest,
    api: ListenerApi,
    catalog: CatalogDep,
    services: ReadyServices,
) -> dict[str, Any]:
    """Seeds: the playlist's songs the catalog knows; none of the playlist's songs returns."""
    ids = list(dict.fromkeys(playlist_track_ids(api, playlist_id)))
    known = _catalog_known(catalog, ids)
    seeds = [t for t in ids if known[t]][:50]  # the recommender takes at most 50 seeds
    if not seeds:
        raise ProblemError(
            422,
            f"the catalog knows none of the playlist's {len(ids)} songs, so there is nothing "
            "to expand from: upload some of them (POST /api/v1/songs), or pick another playlist",
            title="No seeds in the catalog",
        )
    assert services.recommender is not None
    answer = recommend(
        services.recommender,
        Ask(
            seeds=seeds,
            limit=body.limit,
            max_popularity=body.max_popularity,
            max_per_artist=body.max_per_artist,
            exclude_ids=ids,
            within_distance=body.within_distance,
            include_recent=body.include_recent,
        ),
        api.listener_id,
    )
    answer["seeds_used"] = [
        {"track_id": t, "weight": 1.0, "why": "in the playlist you expand"} for t in seeds
    ]
    answer["playlist"] = {"id": playlist_id, "items_total": len(ids), "in_catalog": len(seeds)}
    return answer


def _summary(row: sa.Row, songs: list[sa.Row] | None = None) -> LivingPlaylist:
    url = (
        f"https://open.spotify.com/playlist/{row.spotify_playlist_id}"
        if row.spotify_playlist_id
        else None
    )
    return LivingPlaylist(
        id=row.playlist_id,
        name=row.name,
        spotify_playlist_id=row.spotify_playlist_id,
        url=url,
        size=row.size,
        max_popularity=row.max_popularity,
        max_per_artist=row.max_per_artist,
        taste=row.taste,
        seeds=[SeedUsed(**s) for s in row.seeds],
        version=row.version,
        synced_version=row.synced_version,
        songs_added=row.songs_added,
        created_at=row.created_at,
        last_refresh=row.refreshed_at,
        stopped_at=row.stopped_at,
        songs=None
        if songs is None
        else [
            LivingSong(track_id=s.track_id, distance=s.distance, added_at=s.added_at) for s in songs
        ],
    )


def _rank(
    api: SpotifyApi,
    catalog: Catalog,
    services: ReadyServices,
    *,
    seeds: list[dict[str, Any]],
    size: int,
    max_popularity: int | None,
    max_per_artist: int,
) -> list[tuple[str, float]]:
    assert services.recommender is not None
    return rank(
        services.recommender,
        api.listener_id,
        seeds=seeds,
        size=size,
        max_popularity=max_popularity,
        max_per_artist=max_per_artist,
    )


def _seed_dicts(seeds: list[TasteSeed]) -> list[dict[str, Any]]:
    return seed_dicts(seeds)


def _create(body: LivingRequest, api: SpotifyApi, catalog: Catalog, services: ReadyServices) -> str:
    assert services.living is not None and services.sync is not None
    if body.taste:
        seeds = _seed_dicts(_taste(api, catalog, services, services.settings.taste_max_seeds))
    else:
        assert body.seeds is not None
        unique = list(dict.fromkeys(body.seeds))
        known = _catalog_known(catalog, unique)
        missing = [t for t in unique if not known[t]]
        if missing:
            raise ProblemError(
                422,
                f"the catalog does not know seed(s) {', '.join(missing)}; seeds must be catalog "
                "songs (GET /api/v1/songs?q=...)",
                field="seeds",
            )
        seeds = [{"track_id": t, "weight": 1.0, "why": "chosen by you"} for t in unique]
    items = _rank(
        api,
        catalog,
        services,
        seeds=seeds,
        size=body.size,
        max_popularity=body.max_popularity,
        max_per_artist=body.max_per_artist,
    )
    playlist_id = services.living.create(
        listener_id=listener_key(api.listener_id),
        name=body.name,
        size=body.size,
        max_popularity=body.max_popularity,
        max_per_artist=body.max_per_artist,
        seeds=seeds,
        taste=body.taste,
        items=items,
    )
    created = api.call(
        lambda sp: sp.current_user_playlist_create(  # POST /v1/me/playlists
            body.name,
            public=False,
            collaborative=False,
            description="A living playlist by Emergify: it keeps itself fresh with new songs.",
        ),
        "create the playlist",
    )
    services.living.attach_spotify(playlist_id, created["id"])
    services.sync.sync_now(playlist_id)
    return playlist_id


@router.post(
    "/living-playlists",
    status_code=201,
    response_model=LivingPlaylist,
    name="create_living_playlist",
    summary="Create a living playlist: a Spotify playlist Emergify keeps fresh",
    responses=_ERRORS,
)
async def create_living_playlist(
    body: LivingRequest, api: ListenerApi, catalog: CatalogDep, services: ReadyServices
) -> LivingPlaylist:
    """Creates the Spotify playlist with the `size` nearest songs to the seeds (or your taste);
    new songs that come closer replace the furthest ones from then on."""
    assert services.living is not None and services.publisher is not None
    playlist_id = await run_in_threadpool(_create, body, api, catalog, services)
    row = services.living.get(listener_key(api.listener_id), playlist_id)
    await services.publisher.publish(LivingPlaylistChange(playlist_id=playlist_id, version=1))
    return _summary(row, services.living.items(playlist_id))


@router.get(
    "/living-playlists",
    response_model=list[LivingPlaylist],
    name="living_playlists",
    summary="The listener's living playlists",
    responses=_ERRORS,
)
def list_living_playlists(api: ListenerApi, services: ReadyServices) -> list[LivingPlaylist]:
    """Newest first, stopped ones too, with last refresh, songs added and the synced version."""
    assert services.living is not None
    return [_summary(row) for row in services.living.listed(listener_key(api.listener_id))]


@router.get(
    "/living-playlists/{living_id}",
    response_model=LivingPlaylist,
    name="living_playlist",
    summary="One living playlist with its songs",
    responses={**_ERRORS, **problem_responses(404)},
)
def get_living_playlist(
    living_id: str, api: ListenerApi, services: ReadyServices
) -> LivingPlaylist:
    """Its songs, nearest first, each with when it entered."""
    assert services.living is not None
    row = services.living.get(listener_key(api.listener_id), living_id)
    return _summary(row, services.living.items(living_id))


@router.delete(
    "/living-playlists/{living_id}",
    response_model=LivingPlaylist,
    name="stop_living_playlist",
    summary="Stop a living playlist (the Spotify playlist stays yours)",
    responses={**_ERRORS, **problem_responses(404)},
)
def stop_living_playlist(
    living_id: str, api: ListenerApi, services: ReadyServices
) -> LivingPlaylist:
    """No more changes are made to it; the Spotify playlist keeps its songs."""
    assert services.living is not None
    return _summary(services.living.stop(listener_key(api.listener_id), living_id))


def _refresh(living_id: str, api: SpotifyApi, catalog: Catalog, services: ReadyServices) -> int:
    assert services.living is not None and services.sync is not None
    assert services.recommender is not None
    row = services.living.get(listener_key(api.listener_id), living_id)
    if row.stopped_at is not None:
        raise ProblemError(409, "this living playlist is stopped; create a new one instead")
    version = refresh(services.living, row, api, catalog, services.recommender, services.settings)
    if version is None:  # stopped while it was being re-ranked
        raise ProblemError(409, "this living playlist is stopped; create a new one instead")
    services.sync.sync_now(living_id)
    return version


@router.post(
    "/living-playlists/{living_id}/refresh",
    response_model=LivingPlaylist,
    name="refresh_living_playlist",
    summary="Re-rank a living playlist now",
    responses={**_ERRORS, **problem_responses(404, 409)},
)
async def refresh_living_playlist(
    living_id: str, api: ListenerApi, catalog: CatalogDep, services: ReadyServices
) -> LivingPlaylist:
    """The whole list re-ranked with your current rules (and taste, for taste playlists)."""
    assert services.living is not None and services.publisher is not None
    version = await run_in_threadpool(_refresh, living_id, api, catalog, services)
    await services.publisher.publish(LivingPlaylistChange(playlist_id=living_id, version=version))
    row = services.living.get(listener_key(api.listener_id), living_id)
    return _summary(row, services.living.items(living_id))
