"""GET /api/v1/songs/{track_id} and GET /api/v1/songs?q=: the materialised catalog."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Path, Query
from sqlalchemy.exc import SQLAlchemyError

from emergify_contracts.problems import ProblemError, problem_responses
from emergify_contracts.song import TRACK_ID_RE
from emergify_recommender.api.deps import CurrentIndex, LiveCatalog
from emergify_recommender.api.schemas import SearchResponse, SongDetail, SongSummary
from emergify_recommender.catalog import Catalog
from emergify_recommender.feature_table import load_ids
from emergify_recommender.recommendation import spotify_url
from emergify_recommender.records import SongRecord
from emergify_recommender.search import search

log = structlog.get_logger()
router = APIRouter(tags=["songs"])
_NOT_READY = "The catalog is still loading."


@router.get(
    "/api/v1/songs/{track_id}",
    response_model=SongDetail,
    name="get_song",
    summary="One song with its features and cluster",
    responses=problem_responses(
        404,
        422,
        503,
        descriptions={404: "Not materialised (yet).", 422: "Malformed track id.", 503: _NOT_READY},
    ),
)
def get_song(
    track_id: Annotated[
        str,
        Path(
            pattern=TRACK_ID_RE.pattern,
            description="Spotify track id (22 base62).",
            examples=["5P6nbeGMqnAGwqt9rrraaQ"],
        ),
    ],
    index: CurrentIndex,
    catalog: LiveCatalog,
) -> SongDetail:
    """The song as the feature table holds it, with its cluster under the current model."""
    row = index.position(track_id)
    if row is None:
        raise ProblemError(
            404,
            f"track {track_id} is not in the catalog yet: an uploaded song appears once the "
            "speed layer has materialised it (usually within seconds)",
            title="Song not found",
            track_id=track_id,
        )
    song = _stored_song(catalog, track_id) or index.record(row)
    return SongDetail(
        track_id=song.track_id,
        name=song.name,
        artists=list(song.artists),
        artist_ids=list(song.artist_ids),
        album=song.album,
        release_date=song.release_date,
        duration_ms=song.duration_ms,
        popularity=song.popularity,
        explicit=song.explicit,
        genres=list(song.genres),
        **song.feature_dict(),
        key=song.key,
        mode=song.mode,
        time_signature=song.time_signature,
        cluster=index.cluster_of_row(row),
        model_version=index.model_version,
        table_version=song.table_version,
        ingested_at=song.ingested_at,
        updated_at=song.updated_at,
        spotify_url=spotify_url(song.track_id),
    )


def _stored_song(catalog: Catalog, track_id: str) -> SongRecord | None:
    """The feature table's row of a song the index holds. The index keeps only what ranking
    and lists need (1M songs must fit in ~300 MB); the detail's other columns (artist ids,
    genres, dates, ...) come from the table. None when the database does not answer: the
    detail then shows what the index holds."""
    try:
        found = load_ids(catalog.engine, [track_id])
    except SQLAlchemyError as exc:
        log.warning("song detail: feature table unreachable", error=type(exc).__name__)
        return None
    return found[0] if found else None


@router.get(
    "/api/v1/songs",
    response_model=SearchResponse,
    name="search_songs",
    summary="Search the catalog by track or artist name",
    responses=problem_responses(
        422, 503, descriptions={422: "Missing or invalid q/limit.", 503: _NOT_READY}
    ),
)
def search_songs(
    q: Annotated[str, Query(min_length=1, max_length=200, description="Text to find.")],
    index: CurrentIndex,
    limit: Annotated[int, Query(ge=1, le=100, description="Most songs to return.")] = 20,
) -> SearchResponse:
    """Case-insensitive substring search over track names and artist names."""
    rows, total = search(index, q, limit)
    items = []
    for row in rows:
        track_id = index.track_id(row)
        items.append(
            SongSummary(
                track_id=track_id,
                name=index.name(row),
                artists=index.artists_of(row),
                album=index.album(row),
                popularity=index.popularity_of(row),
                cluster=index.cluster_of_row(row),
                spotify_url=spotify_url(track_id),
            )
        )
    return SearchResponse(query=q, items=items, count=len(items), total=total)
