"""The compiled kernel of the exact ranking: the nearest songs to one or more queries.

Distance: a weighted L1 over ``d`` standardized features, ``sum_f w_f |z_f - q_f|``, with
``z_f = (x_f - mean_f) / scale_f`` computed from the stored values ``x`` exactly as NumPy
does in float64 (so every distance equals a float64 brute-force recomputation, bit for bit).
With several queries a song's distance is to its nearest query (ties: the earlier one).

Search (see :mod:`emergify_recommender.cells` for the cells):

1. A lower bound per cell from its box: ``sum_f w_f max(0, lo_f - q_f, q_f - hi_f)`` in
   float64, in the same operation order as the distance. Rounding is monotone, so it never
   exceeds the computed distance of any song inside (no slack needed). A cell whose
   lowest popularity is above ``max_popularity`` holds no candidate and is skipped.
2. Cells are visited best-first (a binary heap on the bound), until the next bound is above
   the current ``m``-th distance.
3. In a visited cell every song first gets a float32 estimate (vectorized, no divisions);
   only songs whose estimate minus its error bound can still enter the top ``m`` get the
   exact float64 distance. The top ``m`` are kept in a heap ordered by (distance, row).

Numba compiles it once (``cache=True`` keeps the machine code on disk); :func:`warm` runs
it at start-up so the first request does not pay for compilation.
"""

from __future__ import annotations

import numba as nb
import numpy as np

#: Unit roundoff of float32; the estimate's error is a small multiple of it (see _slack).
_U32 = float(np.finfo(np.float32).eps) / 2
#: "No popularity cap": above every stored popularity (int16).
NO_CAP = 32_767


@nb.njit(cache=True, nogil=True)
def _cell_heap_down(keys: np.ndarray, ids: np.ndarray, i: int, n: int) -> None:
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        small = left
        right = left + 1
        if right < n and keys[right] < keys[left]:
            small = right
        if keys[small] < keys[i]:
            keys[i], keys[small] = keys[small], keys[i]
            ids[i], ids[small] = ids[small], ids[i]
            i = small
        else:
            return


@nb.njit(cache=True, nogil=True)
def _worse(d1: float, r1: int, d2: float, r2: int) -> bool:
    return d1 > d2 or (d1 == d2 and r1 > r2)


@nb.njit(cache=True, nogil=True)
def _top_down(hd: np.ndarray, hr: np.ndarray, hp: np.ndarray, hn: np.ndarray, n: int) -> None:
    """Restore the max-heap (by distance, then row) from the root down."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        big = left
        right = left + 1
        if right < n and _worse(hd[right], hr[right], hd[left], hr[left]):
            big = right
        if _worse(hd[big], hr[big], hd[i], hr[i]):
            hd[i], hd[big] = hd[big], hd[i]
            hr[i], hr[big] = hr[big], hr[i]
            hp[i], hp[big] = hp[big], hp[i]
            hn[i], hn[big] = hn[big], hn[i]
            i = big
        else:
            return


@nb.njit(cache=True, nogil=True)
def _top_up(hd: np.ndarray, hr: np.ndarray, hp: np.ndarray, hn: np.ndarray, i: int) -> None:
    while i > 0:
        parent = (i - 1) // 2
        if _worse(hd[i], hr[i], hd[parent], hr[parent]):
            hd[i], hd[parent] = hd[parent], hd[i]
            hr[i], hr[parent] = hr[parent], hr[i]
            hp[i], hp[parent] = hp[parent], hp[i]
            hn[i], hn[parent] = hn[parent], hn[i]
            i = parent
        else:
            return


@nb.njit(cache=True, nogil=True)
def _search(
    values: np.ndarray,  # d x n stored values in cell order (int32 decimal codes or float64)
    divisors: np.ndarray,  # d, float64: x = values / divisors (ones for float64 values)
    means: np.ndarray,  # d, float64
    scales: np.ndarray,  # d, float64
    weights: np.ndarray,  # d, float64
    value_max: np.ndarray,  # d, float64: max |x_f| over the songs (bounds the estimate error)
    perm: np.ndarray,  # n: cell position -> row
    starts: np.ndarray,  # cells + 1, int64
    lo_t: np.ndarray,  # d x cells, float64 box of the standardized vectors
    hi_t: np.ndarray,
    popularity: np.ndarray,  # n, int16, cell order (-1 unknown)
    cell_min_pop: np.ndarray,  # cells, int16
    max_pop: int,
    queries: np.ndarray,  # nq x d, float64, standardized
    m: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d = values.shape[0]
    nq = queries.shape[0]
    n_cells = starts.size - 1

    # 1. Lower bounds, vectorized over cells, min over queries.
    bounds = np.full(n_cells, np.inf)
    acc = np.empty(n_cells)
    for qi in range(nq):
        acc[:] = 0.0
        for f in range(d):
            q = queries[qi, f]
            w = weights[f]
            lo = lo_t[f]
            hi = hi_t[f]
            for c in range(n_cells):
                gap = max(0.0, lo[c] - q, q - hi[c])
                acc[c] += w * gap
        for c in range(n_cells):
            if acc[c] < bounds[c]:
                bounds[c] = acc[c]
    # 2. A min-heap of the cells that can hold a candidate.
    keys = np.empty(n_cells)
    ids = np.empty(n_cells, dtype=np.int64)
    size = 0
    widest = 0
    for c in range(n_cells):
        if cell_min_pop[c] <= max_pop and starts[c + 1] > starts[c]:
            keys[size] = bounds[c]
            ids[size] = c
            size += 1
            widest = max(widest, starts[c + 1] - starts[c])
    for i in range(size // 2 - 1, -1, -1):
        _cell_heap_down(keys, ids, i, size)

    # The float32 estimate z ~ x * a + b and its error bound (per query: |q| enters).
    a32 = np.empty(d, dtype=np.float32)
    b32 = np.empty(d, dtype=np.float32)
    w32 = np.empty(d, dtype=np.float32)
    q32 = np.empty((nq, d), dtype=np.float32)
    magnitude = 0.0
    for f in range(d):
        a32[f] = np.float32(1.0 / (divisors[f] * scales[f]))
        b32[f] = np.float32(-means[f] / scales[f])
        w32[f] = np.float32(weights[f])
    q_max = 0.0
    for qi in range(nq):
        s = 0.0
        for f in range(d):
            q32[qi, f] = np.float32(queries[qi, f])
            s += weights[f] * abs(queries[qi, f])
        q_max = max(q_max, s)
    for f in range(d):
        magnitude += weights[f] * (value_max[f] + abs(means[f])) / scales[f]
    # Each term passes through ~8 float32 roundings and the sum adds d more: 64 + 4d unit
    # roundoffs of the magnitudes bound the error with room to spare.
    slack = (64.0 + 4.0 * d) * _U32 * (magnitude + q_max) * 1.0001 + 1e-12

    hd = np.empty(m)
    hr = np.empty(m, dtype=np.int64)
    hp = np.empty(m, dtype=np.int64)
    hn = np.empty(m, dtype=np.int64)
    count = 0
    est = np.empty((nq, max(widest, 1)), dtype=np.float32)
    best = np.empty(max(widest, 1), dtype=np.float32)
    while size > 0:
        if count == m and keys[0] > hd[0]:
            break
        cell = ids[0]
        size -= 1
        keys[0] = keys[size]
        ids[0] = ids[size]
        _cell_heap_down(keys, ids, 0, size)
        s0 = starts[cell]
        length = starts[cell + 1] - s0
        # 3a. Estimates for the whole cell (vector loops).
        for qi in range(nq):
            e = est[qi]
            e[:length] = 0.0
            for f in range(d):
                a = a32[f]
                b = b32[f]
                w = w32[f]
                q = q32[qi, f]
                row = values[f]
                for j in range(length):
                    e[j] += w * abs(np.float32(row[s0 + j]) * a + b - q)
        best[:length] = est[0, :length]
        for qi in range(1, nq):
            for j in range(length):
                if est[qi, j] < best[j]:
                    best[j] = est[qi, j]
        # 3b. Exact distances for the songs that may enter the top m.
        for j in range(length):
            p = s0 + j
            if popularity[p] > max_pop:
                continue
            if count == m and best[j] - slack > hd[0]:
                continue
            dist = np.inf
            near = 0
            for qi in range(nq):
                total = 0.0
                for f in range(d):
                    z = (values[f, p] / divisors[f] - means[f]) / scales[f]
                    total += weights[f] * abs(z - queries[qi, f])
                if total < dist:
                    dist = total
                    near = qi
            r = np.int64(perm[p])
            if count < m:
                hd[count], hr[count], hp[count], hn[count] = dist, r, p, near
                _top_up(hd, hr, hp, hn, count)
                count += 1
            elif _worse(hd[0], hr[0], dist, r):
                hd[0], hr[0], hp[0], hn[0] = dist, r, p, near
                _top_down(hd, hr, hp, hn, count)
    return hp[:count], hr[:count], hd[:count], hn[:count]


def search(
    values: np.ndarray,
    divisors: np.ndarray,
    means: np.ndarray,
    scales: np.ndarray,
    weights: np.ndarray,
    value_max: np.ndarray,
    perm: np.ndarray,
    starts: np.ndarray,
    lo_t: np.ndarray,
    hi_t: np.ndarray,
    popularity: np.ndarray,
    cell_min_pop: np.ndarray,
    queries: np.ndarray,
    m: int,
    max_popularity: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``m`` songs nearest to ``queries`` whose popularity is at most ``max_popularity``
    (None: no cap), sorted by (distance, row): their cell positions, rows, distances and
    nearest query. Fewer when fewer pass."""
    cap = NO_CAP if max_popularity is None else int(min(max_popularity, NO_CAP))
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float64)
    pos, rows, dist, near = _search(
        values,
        divisors,
        means,
        scales,
        weights,
        value_max,
        perm,
        starts,
        lo_t,
        hi_t,
        popularity,
        cell_min_pop,
        cap,
        queries,
        max(int(m), 1),
    )
    order = np.lexsort((rows, dist))
    return pos[order], rows[order], dist[order], near[order]


def warm() -> None:
    """Compile (or load from the on-disk cache) the kernel for both stored value types, so
    the first request does not wait for it."""
    d, n = 2, 4
    for values in (np.arange(d * n, dtype=np.int32).reshape(d, n), np.ones((d, n))):
        search(
            values,
            np.ones(d),
            np.zeros(d),
            np.ones(d),
            np.ones(d),
            np.full(d, float(d * n)),
            np.arange(n, dtype=np.int32),
            np.array([0, n], dtype=np.int64),
            np.zeros((d, 1)),
            np.full((d, 1), float(d * n)),
            np.zeros(n, dtype=np.int16),
            np.zeros(1, dtype=np.int16),
            np.zeros((1, d)),
            2,
        )
