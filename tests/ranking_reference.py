"""The brute-force reference of the recommender's ranking, for tests and bench/ (O(n) per
query, not served).

Every distance in float64 (``sum_f w_f |z_f - q_f|``, terms added in feature order, as the
kernel adds them), a full sort by (distance, row), then the same greedy playlist rules.
On a blended index the vectors are ``[z, a]`` and the weights ``(1, ..., 1, w, ..., w)``:
audio L1 plus ``w`` times artist-profile L1 (docs/similarity.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

import numpy as np

from emergify_recommender.index import SongIndex
from emergify_recommender.ranking import Ranked
from emergify_recommender.records import SongRecord


def weighted_l1(
    z: np.ndarray,
    queries: np.ndarray,
    weights: np.ndarray,
    query_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``z`` (n x d), the distance to its nearest query and which (ties: the
    earlier), the d terms added one after the other in feature order; a query's distances
    are divided by its weight (``query_weights``, default 1)."""
    queries = np.atleast_2d(queries)
    best = np.full(z.shape[0], np.inf)
    nearest = np.zeros(z.shape[0], dtype=np.int64)
    for j, q in enumerate(queries):
        total = np.zeros(z.shape[0])
        for f in range(z.shape[1]):
            total += weights[f] * np.abs(z[:, f] - q[f])
        if query_weights is not None:
            total = total / query_weights[j]
        closer = total < best
        best[closer] = total[closer]
        nearest[closer] = j
    return best, nearest


def exact_order(distances: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` smallest by (distance, row)."""
    rows = np.arange(distances.size)
    return np.lexsort((rows, distances))[:k]


def greedy_rules(
    index: SongIndex,
    rows: np.ndarray,
    seeds: Sequence[int],
    max_per_artist: int,
    blocked: set[int],
    limit: int,
) -> list[int]:
    """Positions (into ``rows``, in distance order) the playlist rules keep, one song at a
    time in plain Python (the service's compiled rules are checked against this): never a
    blocked row, never a duplicate of a seed or of a kept song, at most ``max_per_artist``
    songs per credited artist."""
    taken = {int(index.dedup_hashes[s]) for s in seeds}
    per_artist: Counter[int] = Counter()
    kept: list[int] = []
    for i, row in enumerate(rows.tolist()):
        if len(kept) == limit:
            break
        key = int(index.dedup_hashes[row])
        if key in taken or row in blocked:
            continue
        artists = index.artist_hashes[row]
        if any(per_artist[a] >= max_per_artist for a in artists):
            continue
        kept.append(i)
        taken.add(key)
        per_artist.update(artists)
    return kept


def brute_force(
    index: SongIndex,
    queries: np.ndarray,
    limit: int,
    *,
    max_popularity: int | None = None,
    max_per_artist: int = 2,
    exclude: Collection[int] = (),
    seeds: Sequence[int] = (),
    query_weights: np.ndarray | None = None,
    artist_weight: float | None = None,
) -> list[Ranked]:
    """What :func:`emergify_recommender.ranking.rank` must return (diversity 0)."""
    if limit <= 0 or len(index) == 0:
        return []
    queries = index.search_queries(queries)
    rows = np.arange(len(index), dtype=np.int64)
    exact, nearest = weighted_l1(
        index.vectors_of(rows), queries, index.dim_weights(artist_weight), query_weights
    )
    ok = np.ones(rows.size, dtype=bool)
    if max_popularity is not None:
        ok &= index.popularity <= max_popularity
    ranked = np.lexsort((rows, exact))
    ranked = ranked[ok[ranked]]
    blocked = {int(r) for r in (*exclude, *seeds)}
    kept = greedy_rules(index, rows[ranked], seeds, max_per_artist, blocked, limit)
    return [
        Ranked(
            row=int(ranked[i]),
            distance=float(exact[ranked[i]]),
            cluster=index.cluster_of_row(int(ranked[i])),
            seed=int(nearest[ranked[i]]),
        )
        for i in kept
    ]


def synthetic_records(n: int, seed: int, version: int = 1, start: int = 0) -> list[SongRecord]:
    """Songs in a few dense blobs, a small artist pool (so the cap bites), repeated titles
    (so duplicates occur) and coarse feature values (so exact ties occur)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, size=(12, 9))
    blob = rng.integers(0, len(centres), size=n)
    x = np.clip(centres[blob] + rng.normal(0, 0.08, size=(n, 9)), 0, 1).round(2)
    x[:, 2] = x[:, 2] * -30  # loudness, dB
    x[:, 8] = x[:, 8] * 200  # tempo, BPM
    out = []
    for i in range(n):
        j = start + i
        out.append(
            SongRecord(
                track_id=f"Synth{j:017d}",
                name=f"Title {rng.integers(0, n // 3)}",
                artists=(f"Artist {rng.integers(0, 60)}",)
                if rng.random() < 0.8
                else (f"Artist {rng.integers(0, 60)}", f"Artist {rng.integers(0, 60)}"),
                features=tuple(x[i].tolist()),
                table_version=version,
                popularity=None if rng.random() < 0.1 else int(rng.integers(0, 100)),
            )
        )
    return out
