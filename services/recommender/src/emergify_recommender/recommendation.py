"""A recommendation request answered: seeds resolved, ranked under the playlist rules,
each item explained. Plain function of the index and the request (the route only calls it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from emergify_contracts.problems import ProblemError
from emergify_contracts.similarity import explain_closeness
from emergify_contracts.song import AUDIO_FEATURES
from emergify_recommender.api.schemas import (
    AudioFeatures,
    Explanation,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
    SeedInfo,
    SeedUsed,
    SimilarityInfo,
)
from emergify_recommender.index import N_FEATURES, SongIndex
from emergify_recommender.listener_rules import ListenerPlan
from emergify_recommender.ranking import Ranked, explain, query_vector, rank

#: Genres by track id for the given ids (the feature table's; the index holds none).
GenreLookup = Callable[[Iterable[str]], Mapping[str, Sequence[str]]]


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
    index: SongIndex,
    body: RecommendationRequest,
    default_max_popularity: int | None = None,
    listener: ListenerPlan | None = None,
    genres_of: GenreLookup | None = None,
) -> RecommendationResponse:
    """The songs nearest to the seeds (audio L1 on standardized features plus the weighted
    artist-profile L1, docs/similarity.md; with several seeds, to the nearest seed),
    exactly as a brute force would rank them, under the playlist rules; optionally
    diversified by artist. ``default_max_popularity`` (the emerging threshold setting)
    applies when the request names none; a request may lift it (100) or lower it. A seed
    missing from the catalog is a 404 problem. ``listener`` (see
    :mod:`emergify_recommender.listener_rules`) adds liked songs as weighted seeds
    and blocks the songs the listener must not get. ``genres_of`` gives the genres of the
    answer's songs and their nearest seeds (asked once, after ranking); without it every
    item has none. Genres are shown and explained, never ranked on."""
    if body.seeds is not None:
        seeds = _seed_rows(index, body.seeds)
        queries = query_vector(index, seeds)
        raw_query = index.raw_of(seeds).mean(axis=0)
        clusters = [index.cluster_of_row(s) for s in seeds]
    else:
        seeds = []
        raw_query = np.asarray(body.seed_features.vector())  # type: ignore[union-attr]
        z_query = index.standardize(raw_query)
        clusters = [index.cluster_of(z_query)]
        queries = index.search_queries(z_query)  # no artist: a = z
    exclude = [row for row in map(index.position, body.exclude_ids) if row is not None]
    # Weighted seeds and the listener's extras (likes after the request's seeds; blocked songs).
    weights = _seed_weights(index, body, seeds)
    seeds_used = [
        SeedUsed(track_id=index.track_id(s), weight=w, why="seed")
        for s, w in zip(seeds, weights, strict=True)
    ]
    query_seeds: list[int | None] = list(seeds) if seeds else [None]
    rule_seeds = list(seeds)
    query_weights = list(weights) if seeds else [1.0]
    if listener is not None:
        likes = [(r, w) for r, w in zip(listener.like_rows, listener.like_weights, strict=True)]
        likes = [(r, w) for r, w in likes if r not in set(seeds)]
        if likes:
            queries = np.vstack([queries, query_vector(index, [r for r, _ in likes])])
        for row, weight in likes:
            query_seeds.append(row)
            rule_seeds.append(row)
            query_weights.append(weight)
            seeds_used.append(SeedUsed(track_id=index.track_id(row), weight=weight, why="like"))
        exclude.extend(listener.blocked)
    # The artist part's weight: the request's, else the model's (0 when nothing is blended).
    artist_weight = body.similarity.artist_weight if body.similarity is not None else None
    weight = (index.artist_weight if artist_weight is None else artist_weight) * index.blended
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
        seeds=rule_seeds,
        diversity=body.diversity,
        query_weights=(None if all(w == 1.0 for w in query_weights) else np.asarray(query_weights)),
        artist_weight=artist_weight,
    )
    if body.within_distance is not None:
        # The first `limit` of the exact order, cut at the threshold: every song within it.
        ranked = [r for r in ranked if r.distance <= body.within_distance]
    items = []
    typical = index.typical_distances if ranked else (1.0, 1.0)
    seed_ids = [None if s is None else index.track_id(s) for s in query_seeds]
    genres = _genres(genres_of, index, ranked, seed_ids)
    for r in ranked:
        why = explain(index, r.row, queries[r.seed])
        query = queries[r.seed]
        seed_a = query[N_FEATURES:] if query.size > N_FEATURES else query
        track_id = index.track_id(r.row)
        seed_id = seed_ids[r.seed]
        song_genres = genres.get(track_id, ())
        part = explain_closeness(
            query[:N_FEATURES],
            seed_a,
            index.z_of(r.row),
            index.a_of(r.row),
            weight,
            seed_genres=() if seed_id is None else genres.get(seed_id, ()),
            song_genres=song_genres,
            typical=typical,
        )
        items.append(
            RecommendedItem(
                track_id=track_id,
                name=index.name(r.row),
                artists=index.artists_of(r.row),
                genres=list(song_genres),
                album=index.album(r.row),
                popularity=index.popularity_of(r.row),
                distance=r.distance,
                cluster=r.cluster,
                seed_track_id=seed_id,
                explanation=Explanation(
                    closest=list(why.closest),
                    furthest=list(why.furthest),
                    reasons=list(part.reasons),
                    shared_genres=list(part.shared_genres),
                    audio_distance=part.audio_distance,
                    artist_distance=part.artist_distance if weight > 0 else None,
                ),
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
        listener_id=listener.listener_id if listener is not None else None,
        seeds_used=seeds_used,
        similarity=(
            None
            if index.similarity is None
            else SimilarityInfo(
                artist_weight=weight, multi_artist_rule=index.similarity.multi_artist_rule
            )
        ),
    )


def _genres(
    genres_of: GenreLookup | None,
    index: SongIndex,
    ranked: Sequence[Ranked],
    seed_ids: list[str | None],
) -> Mapping[str, Sequence[str]]:
    """The genres of the ranked songs and of the seeds they are nearest to, in one lookup."""
    if genres_of is None or not ranked:
        return {}
    ids = [index.track_id(r.row) for r in ranked]
    ids += [seed for seed in dict.fromkeys(seed_ids[r.seed] for r in ranked) if seed is not None]
    return genres_of(ids)


def _seed_weights(index: SongIndex, body: RecommendationRequest, seeds: list[int]) -> list[float]:
    """The weight of each (deduplicated) seed row: the request's for its first mention."""
    if body.seed_weights is None or body.seeds is None:
        return [1.0] * len(seeds)
    by_id: dict[str, float] = {}
    for track_id, weight in zip(body.seeds, body.seed_weights, strict=True):
        by_id.setdefault(track_id, weight)
    return [by_id[index.track_id(s)] for s in seeds]
