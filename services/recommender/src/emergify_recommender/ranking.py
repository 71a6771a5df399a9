"""Ranking: which songs sound most like the seeds, under the playlist rules.

Pure functions on a :class:`SongIndex` and NumPy arrays; no I/O.

**Exact answer.** The result is, by definition, what a brute force would return: every
song's (weighted) Manhattan distance on the standardized features, ascending (ties by
row), filtered by the playlist rules applied greedily in that order. The compiled kernel
(:mod:`emergify_recommender.nearest`) returns the exact first ``m`` songs of that order
that pass the vector rule (popularity); the greedy rules run on them; when they keep fewer
than asked while more songs exist, ``m`` grows and the kernel runs again. The greedy rules
only ever look at earlier songs, so the first ``count`` they keep from an exact prefix are
the brute force's.

**Several seeds make one playlist.** A song's distance is its distance to the *nearest*
seed (``min`` over seeds), and each item names that seed. Averaging the seeds (the old
rule) aims at a point between them, which may sound like none of them: the mean of a
ballad and a drum'n'bass track is a mid-tempo song neither listener loved. With ``min``,
every seed contributes its own neighbourhood, the list is still one ranking by distance,
and it stays exactly searchable (the lower bound of a cell is the min over seeds too).

**Rules** (greedy, in distance order): never a seed or an excluded id; never a duplicate
of a seed or of a song already chosen (same normalized title and artists); popularity <=
``max_popularity`` when given (unknown popularity passes: an unknown artist is the
emerging kind); at most ``max_per_artist`` songs per artist, where every credited artist
of a song counts.

**Diversity** in [0, 1] (0 = the exact list). The exact rule-abiding list is over-fetched
to ``limit + ceil(2 * diversity * limit)`` songs, then ``limit`` of them are picked one by
one (MMR-style), each time the song minimizing ``distance + diversity * spread * repeats``
where ``spread`` is the distance range of the over-fetched list and ``repeats`` the number
of already picked songs sharing an artist with it. At diversity 1 a repeated artist costs
the whole range, so any new artist in the pool wins; the distance cost is bounded: every
song returned is among the ``limit * (1 + 2 * diversity)`` nearest that pass the rules.
The answer is then sorted by distance.

**Explanations.** Per item, the two features whose standardized values are closest to the
(nearest) seed's and the two furthest from it (absolute difference, ties in feature order).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from emergify_contracts.song import AUDIO_FEATURES
from emergify_recommender.index import N_FEATURES, SongIndex
from emergify_recommender.nearest import Found, greedy_rules, left_out_dominated, search_capped


@dataclass(frozen=True, slots=True)
class Ranked:
    """One recommended song: its row in the index, distance to the query, cluster, and the
    query (seed) it is nearest to (an index into the queries)."""

    row: int
    distance: float
    cluster: int | None
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Explanation:
    """The features where a song is closest to and furthest from its seed."""

    closest: tuple[str, ...]
    furthest: tuple[str, ...]


def query_vector(index: SongIndex, seed_rows: Sequence[int]) -> np.ndarray:
    """The queries for seed songs, one row per seed: their exact standardized vectors, and
    (blended index) each seed's own artist vector after them."""
    if not seed_rows:
        raise ValueError("at least one seed is needed")
    return index.vectors_of(np.asarray(seed_rows, dtype=np.int64))


def explain(index: SongIndex, row: int, query: np.ndarray, count: int = 2) -> Explanation:
    """The ``count`` features nearest to and furthest from ``query`` (its standardized
    features: an artist part after them is ignored)."""
    gap = np.abs(index.z_of(row) - np.asarray(query)[:N_FEATURES])
    order = np.argsort(gap, kind="stable")
    furthest = np.argsort(-gap, kind="stable")[:count]
    return Explanation(
        closest=tuple(AUDIO_FEATURES[i] for i in order[:count]),
        furthest=tuple(AUDIO_FEATURES[i] for i in furthest),
    )


class _Rules:
    """The greedy playlist rules, applied to candidates in distance order."""

    def __init__(
        self, index: SongIndex, seeds: Sequence[int], max_per_artist: int, blocked: np.ndarray
    ) -> None:
        self.index = index
        self.max_per_artist = max_per_artist
        self.blocked_rows = blocked  # sorted, unique
        self.seed_key_array = np.unique(index.dedup_hashes[np.asarray(seeds, dtype=np.int64)])

    def apply(self, rows: np.ndarray, limit: int) -> list[int]:
        """Positions (into ``rows``) of the songs the rules keep, at most ``limit``
        (compiled: :func:`~emergify_recommender.nearest.greedy_rules`)."""
        index = self.index
        kept = greedy_rules(
            np.ascontiguousarray(rows, dtype=np.int64),
            index.dedup_hashes[rows],
            index.artist_hashes.offsets,
            index.artist_hashes.values,
            self.max_per_artist,
            self.seed_key_array,
            self.blocked_rows,
            limit,
        )
        return kept.tolist()

    def left_out_never_kept(
        self, rows: np.ndarray, dist: np.ndarray, kept: list[int], limit: int, found: Found
    ) -> bool:
        """Whether the greedy rules over every song would keep exactly what they kept from
        ``rows`` (by distance, ``kept`` positions into it): true when each song the search's
        per-combination cap left out, up to the last one kept (all of them when fewer than
        ``limit`` were kept), comes after ``max_per_artist`` kept songs of one of its
        artists, so the rules would have dropped it there too. By induction in distance
        order the songs kept before it are then the same either way. Compiled
        (:func:`~emergify_recommender.nearest.left_out_dominated`): the left out may be
        thousands (an artist with many songs near the seed)."""
        out_d, out_r = found.left_out_distances, found.left_out_rows
        if not out_r.size:
            return True
        at = np.asarray(kept, dtype=np.int64)
        hashes = self.index.artist_hashes
        return bool(
            left_out_dominated(
                np.ascontiguousarray(rows[at], dtype=np.int64),
                np.ascontiguousarray(dist[at], dtype=np.float64),
                hashes.offsets,
                hashes.values,
                self.max_per_artist,
                out_d,
                out_r,
                len(kept) == limit,
            )
        )


def nearest_under_rules(
    index: SongIndex,
    queries: np.ndarray,
    count: int,
    *,
    seed_cluster: int | Sequence[int] | None = None,
    max_popularity: int | None = None,
    max_per_artist: int = 2,
    exclude: Collection[int] = (),
    seeds: Sequence[int] = (),
    query_weights: np.ndarray | None = None,
    artist_weight: float | None = None,
) -> list[Ranked]:
    """The exact first ``count`` songs of the brute-force rule-abiding order (see module
    docs), by (distance to the nearest query, row). ``seed_cluster`` is accepted for
    callers that pass it; the search does not need it. ``query_weights`` (in (0, 1], one
    per query) divide each query's distances. ``artist_weight`` (>= 0; None: the index's)
    weighs the artist part of a blended index (docs/similarity.md)."""
    del seed_cluster
    if count <= 0 or len(index) == 0:
        return []
    queries = index.search_queries(queries)
    weights = index.dim_weights(artist_weight)
    blocked_rows = np.unique(np.asarray([*exclude, *seeds], dtype=np.int64))
    rules = _Rules(index, seeds, max_per_artist, blocked_rows)
    # Room for what the greedy rules may drop; rarely, a second run with more.
    # The rules keep at most max_per_artist songs of an artist, so the search holds at most
    # that many of one artist combination, and little more than ``count`` in all; proven
    # harmless after the fact, else searched again without the cap (a duplicate of a kept
    # song, or of a seed, took a place the rules then left empty).
    per_combination = max(max_per_artist, 0)
    m = count + count // (4 if per_combination else 2) + 8
    while True:
        found = search_capped(
            index.cells,
            index.means,
            index.scales,
            weights,
            queries,
            m,
            max_popularity,
            query_weights=query_weights,
            artist_vectors=index.artist_table,
            per_combination=per_combination,
            blocked=blocked_rows,
        )
        rows, dist, nearest = found.rows, found.distances, found.nearest
        n_found = rows.size
        kept = rules.apply(rows, count)
        if per_combination and not rules.left_out_never_kept(rows, dist, kept, count, found):
            per_combination = 0
            m = max(m, count + count // 2 + 8)
            continue
        if len(kept) == count or n_found < m:
            break
        m *= 4
    at = np.asarray(kept, dtype=np.int64)
    picked = rows[at]
    # Whole columns to Python at once: per-item NumPy scalar access costs more than the search.
    clusters = index.clusters[picked].tolist() if index.model else [None] * at.size
    return [
        Ranked(row=row, distance=distance, cluster=cluster, seed=seed)
        for row, distance, cluster, seed in zip(
            picked.tolist(), dist[at].tolist(), clusters, nearest[at].tolist(), strict=True
        )
    ]


def diversify(index: SongIndex, pool: list[Ranked], limit: int, diversity: float) -> list[Ranked]:
    """Pick ``limit`` of ``pool`` (ascending by distance) trading distance for new artists
    (see module docs); the answer is sorted by distance."""
    if diversity <= 0 or len(pool) <= limit:
        return pool[:limit]
    spread = max(pool[-1].distance - pool[0].distance, 1e-12)
    artists = [index.artist_hashes[r.row] for r in pool]
    used: Counter[int] = Counter()
    left = list(range(len(pool)))
    picked: list[int] = []
    while left and len(picked) < limit:
        best = min(
            left,
            key=lambda i: (
                pool[i].distance + diversity * spread * sum(used[a] for a in set(artists[i])),
                i,
            ),
        )
        picked.append(best)
        left.remove(best)
        used.update(set(artists[best]))
    return sorted((pool[i] for i in picked), key=lambda r: (r.distance, r.row))


def rank(
    index: SongIndex,
    seed_z: np.ndarray,
    seed_cluster: int | Sequence[int] | None = None,
    limit: int = 30,
    max_popularity: int | None = None,
    max_per_artist: int = 2,
    exclude: Collection[int] = (),
    seeds: Sequence[int] = (),
    diversity: float = 0.0,
    query_weights: np.ndarray | None = None,
    artist_weight: float | None = None,
) -> list[Ranked]:
    """Up to ``limit`` songs nearest to the query under the playlist rules, by distance.

    ``seed_z`` is one search vector or one per seed (rows: standardized features, then on
    a blended index the seed's artist vector; features alone mean ``a = z``); a song's
    distance is to its nearest seed. ``seed_cluster`` names the cluster(s) visited first (None: each
    query's nearest centroid); it changes the speed, never the answer. ``exclude`` and
    ``seeds`` are index rows; seeds are never returned and block their duplicates too.
    """
    if limit <= 0:
        return []
    if not 0.0 <= diversity <= 1.0:
        raise ValueError("diversity must be in [0, 1]")
    fetch = limit + (math.ceil(2 * diversity * limit) if diversity > 0 else 0)
    pool = nearest_under_rules(
        index,
        seed_z,
        fetch,
        seed_cluster=seed_cluster,
        max_popularity=max_popularity,
        max_per_artist=max_per_artist,
        exclude=exclude,
        seeds=seeds,
        query_weights=query_weights,
        artist_weight=artist_weight,
    )
    return diversify(index, pool, limit, diversity)


def warm(index: SongIndex) -> None:
    """Rank once on ``index`` the ways requests do (rules, a popularity cap, several seeds;
    on a blended index also by sound alone), so numba compiles, or loads from its disk
    cache, the kernel for this index's exact array types before a request needs it: the
    types (read-only or not, int32 codes or float64 values) depend on how the index was
    built or loaded, and a missing specialization costs the first request seconds."""
    if len(index) == 0:
        return
    seeds = sorted({0, len(index) - 1})
    for weight in (None, 0.0) if index.blended else (None,):
        rank(index, query_vector(index, seeds[:1]), None, 5, seeds=seeds[:1], artist_weight=weight)
        rank(index, query_vector(index, seeds), None, 5, seeds=seeds, max_popularity=0)
