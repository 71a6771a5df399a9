"""Ranking: which songs sound most like the seeds, under the playlist rules.

Pure functions on a :class:`SongIndex` and NumPy arrays; no I/O.

**Exact answer.** The result is, by definition, what a brute force would return: every
song's Manhattan (L1) distance on the standardized features, ascending (ties by row),
filtered by the playlist rules applied greedily in that order. The search below returns
exactly that list, only faster:

1. Lower bounds. Every search cell (:mod:`emergify_recommender.cells`) has a bounding box;
   ``sum_d max(0, lo_d - q_d, q_d - hi_d)`` is a lower bound on the distance from the query
   to any of its songs (computed for all cells at once in float32, then lowered by its
   rounding error bound, so it stays a true bound).
2. Visiting order. The cells of the seeds' own clusters nearest by bound come first.
   Once a check (step 3) has a current k-th distance, the next batch is every unvisited
   cell whose bound does not exceed it (each may hold a better song; found in one vector
   pass, so most queries end after two rounds); without one, or when that batch would be
   huge (a loose k-th distance), the next cells by ascending bound, in batches whose size
   doubles. A visited block is decoded and standardized on the fly from the stored
   features (the float64 values of the feature table), so every distance is the exact
   float64 one a brute force computes; cheap rules (seeds, excluded ids, popularity) are
   vector masks.
3. Stop. The nearest candidates are ordered by (distance, row) and go through the greedy
   rules. The answer is final when the k-th kept distance is below (a) every visited
   candidate left out of that ordering and (b) every unvisited cell's lower bound;
   otherwise more candidates, or more cells, are taken.

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
from emergify_recommender.cells import Cells
from emergify_recommender.index import SongIndex

_FIRST_SORTED = 256  # cells ordered by bound up front; the rest only when needed
_WINDOW = 64  # cells examined at a time when picking the next ones
_MIN_BATCH_ROWS = 768  # rows visited before the first exactness check


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


def l1_distances(z: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Manhattan distance from every row of ``z`` to ``query``."""
    return np.abs(z - query).sum(axis=1)


def query_vector(index: SongIndex, seed_rows: Sequence[int]) -> np.ndarray:
    """The queries for seed songs: their exact standardized vectors, one row per seed."""
    if not seed_rows:
        raise ValueError("at least one seed is needed")
    return index.z_of(np.asarray(seed_rows, dtype=np.int64))


def explain(index: SongIndex, row: int, query: np.ndarray, count: int = 2) -> Explanation:
    """The ``count`` features nearest to and furthest from ``query`` (standardized)."""
    gap = np.abs(index.z_of(row) - query)
    order = np.argsort(gap, kind="stable")
    furthest = np.argsort(-gap, kind="stable")[:count]
    return Explanation(
        closest=tuple(AUDIO_FEATURES[i] for i in order[:count]),
        furthest=tuple(AUDIO_FEATURES[i] for i in furthest),
    )


class _Rules:
    """The greedy playlist rules, applied to candidates in distance order."""

    def __init__(
        self, index: SongIndex, seeds: Sequence[int], max_per_artist: int, blocked: set[int]
    ) -> None:
        self.index = index
        self.max_per_artist = max_per_artist
        self.blocked = blocked
        self.seed_keys = {int(index.dedup_hashes[s]) for s in seeds}

    def apply(self, rows: np.ndarray, limit: int) -> list[int]:
        """Positions (into ``rows``) of the songs the rules keep, at most ``limit``."""
        index, cap = self.index, self.max_per_artist
        if self._all_pass(rows[:limit]):
            return list(range(min(limit, rows.size)))
        taken = set(self.seed_keys)
        per_artist: Counter[int] = Counter()
        dedup = index.dedup_hashes[rows].tolist()
        offsets = index.artist_hashes.offsets
        values = index.artist_hashes.values
        kept: list[int] = []
        for i, row in enumerate(rows.tolist()):
            key = dedup[i]
            if key in taken or row in self.blocked:
                continue
            artists = values[offsets[row] : offsets[row + 1]].tolist()
            if any(per_artist[a] >= cap for a in artists):
                continue
            kept.append(i)
            taken.add(key)
            per_artist.update(artists)
            if len(kept) == limit:
                break
        return kept

    def _all_pass(self, rows: np.ndarray) -> bool:
        """Whether ``rows`` pass as a whole (vectorized): no duplicate among them or of a
        seed, no artist over the cap. Then the greedy loop would keep them all."""
        index = self.index
        keys = index.dedup_hashes[rows]
        if np.unique(keys).size != keys.size or any(k in self.seed_keys for k in keys.tolist()):
            return False
        offsets = index.artist_hashes.offsets
        lo, hi = offsets[rows], offsets[rows + 1]
        lengths = (hi - lo).astype(np.int64)
        flat = index.artist_hashes.values[
            np.repeat(lo - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
        ]
        if flat.size and np.unique(flat, return_counts=True)[1].max() > self.max_per_artist:
            return False
        return not self.blocked.intersection(rows.tolist())


def _seed_clusters(
    index: SongIndex, queries: np.ndarray, seed_cluster: int | Sequence[int] | None
) -> set[int]:
    if index.model is None:
        return set()
    if seed_cluster is None:
        assigned = index.model.assign(index.model.project(queries))
        return {int(c) for c in assigned}
    if isinstance(seed_cluster, int | np.integer):
        return {int(seed_cluster)}
    return {int(c) for c in seed_cluster}


class _CellOrder:
    """Cells by ascending lower bound, sorted lazily: most queries need only the first few,
    so only a head of the order is selected (``argpartition``) and sorted, growing 4x when
    a query walks past it."""

    def __init__(self, bounds: np.ndarray, visited: np.ndarray) -> None:
        self.bounds = bounds
        self.visited = visited
        self.order = np.empty(0, dtype=np.int64)
        self.cursor = 0  # entries of ``order`` before it are visited (or skipped as such)
        self._sort(_FIRST_SORTED)

    def _sort(self, count: int) -> None:
        n = self.bounds.size
        if count >= n // 2:
            self.order = np.argsort(self.bounds, kind="stable")
        else:
            head = np.argpartition(self.bounds, count)[:count]
            self.order = head[np.argsort(self.bounds[head], kind="stable")]

    def _window(self) -> np.ndarray:
        if self.cursor + _WINDOW > self.order.size and self.order.size < self.bounds.size:
            self._sort(max(self.order.size * 4, self.cursor + _WINDOW))
            # Equal bounds may come out in another order: rescan from the start (visited
            # cells are skipped cheaply), or a cell could slip behind the cursor unvisited.
            self.cursor = 0
        return self.order[self.cursor : self.cursor + _WINDOW]

    def head(self) -> np.ndarray:
        """The sorted head (for picking the seeds' own cells first)."""
        return self.order

    def next_bound(self) -> float:
        """The smallest bound among unvisited cells (inf when all are visited)."""
        while True:
            window = self._window()
            if window.size == 0:
                return math.inf
            fresh = np.flatnonzero(~self.visited[window])
            if fresh.size:
                self.cursor += int(fresh[0])
                return float(self.bounds[window[fresh[0]]])
            self.cursor += window.size

    def take(self, starts: np.ndarray, budget: int) -> np.ndarray:
        """The next unvisited cells by bound, until they hold at least ``budget`` songs."""
        picked: list[np.ndarray] = []
        rows = 0
        while rows < budget:
            window = self._window()
            if window.size == 0:
                break
            fresh_at = np.flatnonzero(~self.visited[window])
            fresh = window[fresh_at]
            cum = np.cumsum(starts[fresh + 1] - starts[fresh]) + rows
            k = int(np.searchsorted(cum, budget)) + 1  # the cell crossing the budget too
            if k >= fresh.size:
                picked.append(fresh)
                rows = int(cum[-1]) if fresh.size else rows
                self.cursor += window.size
            else:
                picked.append(fresh[:k])
                rows = int(cum[k - 1])
                self.cursor += int(fresh_at[k - 1]) + 1
        return np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)


def _cells_within(
    cells: Cells, bounds: np.ndarray, visited: np.ndarray, threshold: float, cap: int
) -> np.ndarray:
    """Every unvisited cell whose bound is <= ``threshold`` (a current k-th distance: each
    may hold a better song, so all are needed), or the nearest of them holding about
    ``cap`` songs when they are many (the threshold is then probably loose, and shrinks)."""
    batch = np.flatnonzero(bounds <= threshold)
    batch = batch[~visited[batch]]
    sizes = cells.starts[batch + 1] - cells.starts[batch]
    if int(sizes.sum()) > cap:
        by_bound = np.argsort(bounds[batch], kind="stable")
        batch, sizes = batch[by_bound], sizes[by_bound]
        batch = batch[: int(np.searchsorted(np.cumsum(sizes), cap)) + 1]
    return batch


def _exact_distances(
    index: SongIndex, rows: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    return _distances(np.ascontiguousarray(index.z_of(rows).T), queries)


def _block_distances(
    index: SongIndex, raw_t: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_distances` of a block of stored features (features x rows, standardized in
    place): the same float64 operations as :meth:`SongIndex.z_of`, so the same bits."""
    raw_t -= index.means[:, None]
    raw_t /= index.scales[:, None]
    return _distances(raw_t, queries)


def _distances(z_t: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L1 distance of each column of ``z_t`` (features x rows, C-contiguous) to its nearest
    query, and which query that is (ties: the earlier). The nine terms are added in
    feature order, row by row (a plain vector add per feature: fast, and the same rounding
    for every caller)."""
    d = nearest = None
    for j, q in enumerate(queries):
        gap = z_t - q[:, None] if queries.shape[0] > 1 else z_t
        if gap is z_t:
            gap -= q[:, None]
        np.abs(gap, out=gap)
        dj = np.add.reduce(gap, axis=0)
        if d is None:
            d, nearest = dj, np.zeros(dj.size, dtype=np.int64)
        else:
            closer = dj < d
            d[closer] = dj[closer]
            nearest[closer] = j
    assert d is not None and nearest is not None
    return d, nearest


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
) -> list[Ranked]:
    """The exact first ``count`` songs of the brute-force rule-abiding order (see module
    docs), by (distance to the nearest query, row)."""
    if count <= 0 or len(index) == 0:
        return []
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    cells = index.cells
    bounds = cells.lower_bounds(queries)
    visited = np.zeros(cells.n_cells, dtype=bool)
    order = _CellOrder(bounds, visited)
    blocked = {int(r) for r in (*exclude, *seeds)}
    blocked_rows = np.fromiter(blocked, dtype=np.int64, count=len(blocked))
    rules = _Rules(index, seeds, max_per_artist, blocked)
    need = count * 2 + len(blocked) + 16
    budget = max(_MIN_BATCH_ROWS, 4 * need)

    # First batch: the seeds' own clusters, nearest cells first.
    batch = np.empty(0, dtype=np.int64)
    home = _seed_clusters(index, queries, seed_cluster)
    if home:
        head = order.head()
        mine = head[np.isin(cells.cluster[head], list(home))]
        if mine.size:
            cum = np.cumsum(cells.starts[mine + 1] - cells.starts[mine])
            batch = mine[: int(np.searchsorted(cum, budget)) + 1]
    pool_rows: list[np.ndarray] = []
    pool_d: list[np.ndarray] = []
    pool_seed: list[np.ndarray] = []
    threshold = math.inf  # after a check: the distance an unvisited cell must not exceed
    while True:
        if batch.size == 0 and threshold != math.inf:
            batch = _cells_within(cells, bounds, visited, threshold, 4 * budget)
            budget *= 2
        if batch.size == 0:
            batch = order.take(cells.starts, budget)
            budget *= 2
        if batch.size:
            visited[batch] = True
            pos = cells.block(batch)
            rows = cells.perm[pos].astype(np.int64)
            keep = np.ones(pos.size, dtype=bool)
            if max_popularity is not None:
                keep &= index.popularity[rows] <= max_popularity  # -1 (unknown) passes
            for b in blocked_rows.tolist() if blocked_rows.size <= 8 else ():
                keep &= rows != b
            if blocked_rows.size > 8:
                keep &= ~np.isin(rows, blocked_rows)
            if not keep.all():
                pos, rows = pos[keep], rows[keep]
            d, nearest = _block_distances(index, cells.rows_raw(pos), queries)
            pool_rows.append(rows)
            pool_d.append(d)
            pool_seed.append(nearest)
            batch = np.empty(0, dtype=np.int64)
        next_bound = order.next_bound()
        if len(pool_rows) > 1:
            pool_rows = [np.concatenate(pool_rows)]
            pool_d = [np.concatenate(pool_d)]
            pool_seed = [np.concatenate(pool_seed)]
        all_rows = pool_rows[0] if pool_rows else np.empty(0, dtype=np.int64)
        all_d = pool_d[0] if pool_d else np.empty(0)
        # Cheap test first: the count-th smallest distance ignoring the rules can only be
        # lower than the k-th under them; if an unvisited cell may beat even that, visit.
        if all_d.size >= count and next_bound != math.inf:
            floor = float(np.partition(all_d, count - 1)[count - 1])
            if next_bound <= floor:
                threshold = floor
                continue
        elif all_d.size < count and next_bound != math.inf:
            threshold = math.inf
            continue
        m = need
        while True:
            if m >= all_d.size:
                sel = np.arange(all_d.size)
                cut = math.inf  # every visited candidate is in
            else:
                part = np.argpartition(all_d, m)
                sel, cut = part[:m], float(all_d[part[m]])
            ranked = sel[np.lexsort((all_rows[sel], all_d[sel]))]
            kept = rules.apply(all_rows[ranked], count)
            if len(kept) == count:
                kth = float(all_d[ranked[kept[-1]]])
                if cut <= kth:
                    m *= 4  # a left-out visited candidate might still tie or beat the k-th
                    continue
                done = next_bound > kth
                threshold = kth
            else:
                if cut != math.inf:
                    m *= 4
                    continue
                done = next_bound == math.inf
                threshold = math.inf
            break
        if done:
            return [
                Ranked(
                    row=int(all_rows[j]),
                    distance=float(all_d[j]),
                    cluster=index.cluster_of_row(int(all_rows[j])),
                    seed=int(pool_seed[0][j]),
                )
                for j in ranked[kept]
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
) -> list[Ranked]:
    """Up to ``limit`` songs nearest to the query under the playlist rules, by distance.

    ``seed_z`` is one standardized vector or one per seed (rows); a song's distance is to
    its nearest seed. ``seed_cluster`` names the cluster(s) visited first (None: each
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
    )
    return diversify(index, pool, limit, diversity)


def brute_force(
    index: SongIndex,
    queries: np.ndarray,
    limit: int,
    *,
    max_popularity: int | None = None,
    max_per_artist: int = 2,
    exclude: Collection[int] = (),
    seeds: Sequence[int] = (),
) -> list[Ranked]:
    """The reference answer: every distance in float64, full sort, the same greedy rules.
    For tests and benchmarks (O(n) per query)."""
    if limit <= 0 or len(index) == 0:
        return []
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    rows = np.arange(len(index), dtype=np.int64)
    exact, nearest = _exact_distances(index, rows, queries)
    ok = np.ones(rows.size, dtype=bool)
    if max_popularity is not None:
        ok &= index.popularity <= max_popularity
    ranked = np.lexsort((rows, exact))
    ranked = ranked[ok[ranked]]
    blocked = {int(r) for r in (*exclude, *seeds)}
    kept = _Rules(index, seeds, max_per_artist, blocked).apply(rows[ranked], limit)
    return [
        Ranked(
            row=int(ranked[i]),
            distance=float(exact[ranked[i]]),
            cluster=index.cluster_of_row(int(ranked[i])),
            seed=int(nearest[ranked[i]]),
        )
        for i in kept
    ]
