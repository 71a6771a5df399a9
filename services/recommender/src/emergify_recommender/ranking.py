"""Ranking: which songs sound most like the seeds, under the playlist rules.

Pure functions on a :class:`SongIndex` and NumPy arrays; no I/O.

- The query is a standardized feature vector. Several seeds are averaged in standardized
  space (the mean of their z vectors), which equals standardizing the mean of their raw
  features. A later issue replaces this with per-seed candidate lists merged by rank.
- Candidates are the songs of the query's cluster, by ascending Manhattan (L1) distance on
  the standardized features. When that cluster runs out before ``limit``, the next-nearest
  clusters (by distance from the query's PCA coordinates to their centroids) are scanned in
  turn. The answer is sorted by distance (ties by row), so spill-over songs that happen to
  be closer than some in-cluster songs are placed by distance, not appended at the end.
- Rules, applied in that scan order: never a seed or an excluded id; never a duplicate of a
  seed or of a song already chosen (same :func:`~emergify_recommender.index.dedup_key`);
  popularity <= ``max_popularity`` when given (unknown popularity passes: an unknown
  artist is the emerging kind); at most ``max_per_artist`` songs per artist, where every
  credited artist of a song counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from emergify_recommender.index import SongIndex


@dataclass(frozen=True, slots=True)
class Ranked:
    """One recommended song: its row in the index, distance to the query, cluster."""

    row: int
    distance: float
    cluster: int | None


def l1_distances(z: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Manhattan distance from every row of ``z`` to ``query``."""
    return np.abs(z - query).sum(axis=1)


def query_vector(index: SongIndex, seed_rows: Sequence[int]) -> np.ndarray:
    """The query for several seed songs: the mean of their standardized vectors."""
    if not seed_rows:
        raise ValueError("at least one seed is needed")
    return index.z[np.asarray(seed_rows, dtype=np.int64)].mean(axis=0)


def ascending(distances: np.ndarray, first: int) -> Iterator[int]:
    """Positions of ``distances`` in ascending order (ties by position), sorting lazily.

    Only the nearest ``first`` are selected (``argpartition``) and sorted; if the caller
    keeps asking, the window grows fourfold. A rule-heavy request therefore still costs
    O(n) per window rather than a full sort.
    """
    n = distances.size
    done = np.zeros(n, dtype=bool)
    k = min(max(first, 1), n)
    while k:
        part = np.arange(n) if k >= n else np.argpartition(distances, k - 1)[:k]
        part = part[np.lexsort((part, distances[part]))]
        for i in part:
            # A tie straddling the window edge may reappear in the next window.
            if not done[i]:
                done[i] = True
                yield int(i)
        if k >= n:
            return
        k = min(k * 4, n)


def rank(
    index: SongIndex,
    seed_z: np.ndarray,
    seed_cluster: int | None,
    limit: int,
    max_popularity: int | None = None,
    max_per_artist: int = 2,
    exclude: Collection[int] = (),
    seeds: Sequence[int] = (),
) -> list[Ranked]:
    """Up to ``limit`` songs nearest to ``seed_z`` under the playlist rules, by distance.

    ``seed_cluster`` is scanned first (None: the query's nearest centroid; ignored before a
    model exists, when the whole catalog is one group). ``exclude`` and ``seeds`` are index
    rows; seeds are never returned and block their duplicates too.
    """
    if limit <= 0 or len(index) == 0:
        return []
    query = np.asarray(seed_z, dtype=np.float64)
    if index.model is None:
        groups = [(None, index.members[0])]
    else:
        order = index.cluster_order(query)
        if seed_cluster is not None and 0 <= seed_cluster < index.model.k:
            order = [seed_cluster, *(c for c in order if c != seed_cluster)]
        groups = [(c, index.members[c]) for c in order]

    blocked = {*exclude, *seeds}
    taken_keys = {index.dedup_keys[s] for s in seeds}
    per_artist: Counter[str] = Counter()
    chosen: list[Ranked] = []
    first_window = limit * 3 + len(blocked) + 16
    for cluster, rows in groups:
        if rows.size == 0:
            continue
        distances = l1_distances(index.z[rows], query)
        for i in ascending(distances, first_window):
            row = int(rows[i])
            if row in blocked:
                continue
            key = index.dedup_keys[row]
            if key in taken_keys:
                continue
            popularity = int(index.popularity[row])
            if max_popularity is not None and popularity > max_popularity:
                continue  # -1 (unknown) always passes
            artists = index.artist_keys[row]
            if any(per_artist[a] >= max_per_artist for a in artists):
                continue
            chosen.append(Ranked(row=row, distance=float(distances[i]), cluster=cluster))
            taken_keys.add(key)
            per_artist.update(artists)
            if len(chosen) == limit:
                break
        if len(chosen) == limit:
            break
    chosen.sort(key=lambda r: (r.distance, r.row))
    return chosen
