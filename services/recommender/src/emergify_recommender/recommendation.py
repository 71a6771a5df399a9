"""A recommendation request answered: seeds resolved, ranked under the playlist rules,
each item explained. Plain function of the index and the request (the route only calls it).
"""

from __future__ import annotations

import numpy as np

from emergify_contracts.problems import ProblemError
from emergify_contracts.song import AUDIO_FEATURES
from emergify_recommender.api.schemas import (
    AudioFeatures,
    Explanation,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
    SeedInfo,
)
from emergify_recommender.index import SongIndex
from emergify_recommender.ranking import explain, query_vector, rank


def spotify_url(track_id: str) -> str:
    """The song's page on open.spotify.com."""
    return f"https://open.spotify.com/track/{track_id}"


def features_of(vector: np.ndarray | list[float]) -> AudioFeatures:
    """An AudioFeatures body from a vector in AUDIO_FEATURES order (already valid: stored
    songs, or a mean of them, which float rounding must not push out of range)."""
    return AudioFeatures.model_construct(
        **{f: float(v) for f, v in zip(AUDIO_FEATURES, vector, strict=True)}
    )


def _seed_rows(index: SongIndex, ids: list[str]) -> list[int]:
    rows = {track_id: index.position(track_id) for track_id in dict.fromkeys(ids)}
    missing = [track_id for track_id, row in rows.items() if row is None]
    if missing:
        names = ", ".join(missing)
        raise ProblemError(
            404,
            f"seed {names} {'is' if len(missing) == 1 else 'are'} not in the catalog yet: "
            "upload the song first (POST /api/v1/songs) or pass its seed_features",
            title="Seed not found",
            missing_ids=missing,
        )
    return [row for row in rows.values() if row is not None]


def recommend(
    index: SongIndex, body: RecommendationRequest, default_max_popularity: int | None = None
) -> RecommendationResponse:
    """The songs nearest to the seeds (Manhattan distance on standardized features; with
    several seeds, to the nearest seed), exactly as a brute force would rank them, under
    the playlist rules; optionally diversified by artist. ``default_max_popularity`` (the
    emerging threshold setting) applies when the request names none; a request may lift it
    (100) or lower it. A seed missing from the catalog is a 404 problem."""
    if body.seeds is not None:
        seeds = _seed_rows(index, body.seeds)
        queries = query_vector(index, seeds)
        raw_query = index.raw_of(seeds).mean(axis=0)
        clusters = [index.cluster_of_row(s) for s in seeds]
    else:
        seeds = []
        raw_query = np.asarray(body.seed_features.vector())  # type: ignore[union-attr]
        queries = index.standardize(raw_query)[None, :]
        clusters = [index.cluster_of(queries[0])]
    exclude = [row for row in map(index.position, body.exclude_ids) if row is not None]
    ranked = rank(
        index,
        queries,
        [c for c in clusters if c is not None] or None,
        body.limit,
        max_popularity=(
            default_max_popularity if body.max_popularity is None else body.max_popularity
        ),
        max_per_artist=body.max_per_artist,
        exclude=exclude,
        seeds=seeds,
        diversity=body.diversity,
    )
    items = []
    for r in ranked:
        why = explain(index, r.row, queries[r.seed])
        track_id = index.track_id(r.row)
        items.append(
            RecommendedItem(
                track_id=track_id,
                name=index.name(r.row),
                artists=index.artists_of(r.row),
                album=index.album(r.row),
                popularity=index.popularity_of(r.row),
                distance=r.distance,
                cluster=r.cluster,
                seed_track_id=index.track_id(seeds[r.seed]) if seeds else None,
                explanation=Explanation(closest=list(why.closest), furthest=list(why.furthest)),
                features=features_of(index.raw_of(r.row)),
                spotify_url=spotify_url(track_id),
            )
        )
    return RecommendationResponse(
        model_version=index.model_version,
        table_version=index.table_version,
        seed=SeedInfo(
            track_ids=[index.track_id(s) for s in seeds],
            features=features_of(raw_query),
            cluster=clusters[0],
            clusters=clusters,
        ),
        items=items,
        count=len(items),
    )
