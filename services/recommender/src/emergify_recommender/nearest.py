"""The compiled kernel of the exact ranking: the nearest songs to one or more queries.

Distance: a weighted L1 over ``d`` standardized features, ``sum_f w_f |z_f - q_f|``, with
``z_f = (x_f - mean_f) / scale_f`` computed from the stored values ``x`` exactly as NumPy
does in float64 (so every distance equals a float64 brute-force recomputation, bit for bit).
With several queries a song's distance is to its nearest query (ties: the earlier one).
A query may carry a weight ``v`` in (0, 1]: its distances are ``total / v`` (float64), so a
lighter seed reaches less far. Box bounds are divided the same way; rounding of a division
by the same positive number is monotone, so a bound still never exceeds a distance.

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

from dataclasses import dataclass

import numba as nb
import numpy as np

from emergify_recommender.artist_vectors import ArtistVectors
from emergify_recommender.cells import Cells, build_cells

#: Unit roundoff of float32; the estimate's error is a small multiple of it (see _slack).
_U32 = float(np.finfo(np.float32).eps) / 2
#: "No popularity cap": above every stored popularity (int16).
NO_CAP = 32_767


@nb.njit(cache=True, nogil=True, inline="always")
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


@nb.njit(cache=True, nogil=True, inline="always")
def _worse(d1: float, r1: int, d2: float, r2: int) -> bool:
    return d1 > d2 or (d1 == d2 and r1 > r2)


@nb.njit(cache=True, nogil=True, inline="always")
def _top_down(
    hd: np.ndarray,
    hr: np.ndarray,
    hp: np.ndarray,
    hn: np.ndarray,
    hc: np.ndarray,
    n: int,
    i: int = 0,
) -> None:
    """Restore the max-heap (by distance, then row) from entry ``i`` (the root) down."""
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
            hc[i], hc[big] = hc[big], hc[i]
            i = big
        else:
            return


@nb.njit(cache=True, nogil=True, inline="always")
def _top_up(
    hd: np.ndarray, hr: np.ndarray, hp: np.ndarray, hn: np.ndarray, hc: np.ndarray, i: int
) -> None:
    while i > 0:
        parent = (i - 1) // 2
        if _worse(hd[i], hr[i], hd[parent], hr[parent]):
            hd[i], hd[parent] = hd[parent], hd[i]
            hr[i], hr[parent] = hr[parent], hr[i]
            hp[i], hp[parent] = hp[parent], hp[i]
            hn[i], hn[parent] = hn[parent], hn[i]
            hc[i], hc[parent] = hc[parent], hc[i]
            i = parent
        else:
            return


@nb.njit(cache=True, nogil=True, inline="always")
def _worst_of(hc: np.ndarray, hd: np.ndarray, hr: np.ndarray, n: int, c: int) -> int:
    """The entry of the top-m heap holding combination ``c``'s worst song."""
    worst = -1
    for i in range(n):
        if hc[i] == c and (worst < 0 or _worse(hd[i], hr[i], hd[worst], hr[worst])):
            worst = i
    return worst


@nb.njit(cache=True, nogil=True, inline="always")
def _holds(sorted_rows: np.ndarray, row: int) -> bool:
    """Whether ``sorted_rows`` holds ``row``: a binary search (numba's ``np.searchsorted``
    allocates an array per call)."""
    left = 0
    right = sorted_rows.size
    while left < right:
        mid = (left + right) >> 1
        if sorted_rows[mid] < row:
            left = mid + 1
        else:
            right = mid
    return left < sorted_rows.size and sorted_rows[left] == row


@nb.njit(cache=True, nogil=True, inline="always")
def _estimate(
    values: np.ndarray,
    s0: int,
    length: int,
    a32: np.ndarray,
    b32: np.ndarray,
    q: np.ndarray,
    qi: int,
    out: np.ndarray,
) -> None:
    """float32 estimates of the distances of positions ``s0:s0+length`` to query ``qi`` of
    ``q`` (weights folded into ``a``, ``b`` and ``q``). No slices (each would cost an atomic
    reference count) and unsigned positions (no negative-index wraparound), so LLVM emits
    contiguous vector loads. The nine audio features (every catalog's case) are summed in
    registers, one pass over the cell instead of one per feature (1.4x, measured); other
    counts take the general loop. Both sum the terms in feature order, the same roundings."""
    base = np.uint64(s0)
    n = np.uint64(length)
    if values.shape[0] == 9:
        a0, a1, a2, a3, a4, a5, a6, a7, a8 = (
            a32[0],
            a32[1],
            a32[2],
            a32[3],
            a32[4],
            a32[5],
            a32[6],
            a32[7],
            a32[8],
        )
        b0, b1, b2, b3, b4, b5, b6, b7, b8 = (
            b32[0],
            b32[1],
            b32[2],
            b32[3],
            b32[4],
            b32[5],
            b32[6],
            b32[7],
            b32[8],
        )
        q0, q1, q2, q3, q4, q5, q6, q7, q8 = (
            q[qi, 0],
            q[qi, 1],
            q[qi, 2],
            q[qi, 3],
            q[qi, 4],
            q[qi, 5],
            q[qi, 6],
            q[qi, 7],
            q[qi, 8],
        )
        for j in range(n):
            p = base + j
            out[j] = (
                np.float32(0.0)
                + abs(np.float32(values[0, p]) * a0 + b0 - q0)
                + abs(np.float32(values[1, p]) * a1 + b1 - q1)
                + abs(np.float32(values[2, p]) * a2 + b2 - q2)
                + abs(np.float32(values[3, p]) * a3 + b3 - q3)
                + abs(np.float32(values[4, p]) * a4 + b4 - q4)
                + abs(np.float32(values[5, p]) * a5 + b5 - q5)
                + abs(np.float32(values[6, p]) * a6 + b6 - q6)
                + abs(np.float32(values[7, p]) * a7 + b7 - q7)
                + abs(np.float32(values[8, p]) * a8 + b8 - q8)
            )
        return
    for j in range(length):
        out[j] = 0.0
    for f in range(values.shape[0]):
        a = a32[f]
        b = b32[f]
        qf = q[qi, f]
        for j in range(n):
            out[j] += abs(np.float32(values[f, base + j]) * a + b - qf)


@nb.njit(cache=True, nogil=True, inline="always")
def _artist_parts(
    combos: np.ndarray,
    s0: int,
    length: int,
    avec32: np.ndarray,
    w32: np.ndarray,
    q: np.ndarray,
    qi: int,
    d: int,
    table: np.ndarray,
    out: np.ndarray,
) -> float:
    """The float32 estimates of the artist part for query ``qi``, ``sum_f |w_f a_f - q_f|``
    with ``a`` the song's combination row (``q[qi]`` holds the weighted query from ``d``
    on), of positions ``s0:s0+length`` into ``out[qi]``; returns their minimum. A
    combination's estimate is computed once per query and kept in ``table[qi]`` (negative:
    not yet)."""
    da = avec32.shape[1]
    low = np.float32(np.inf)
    for j in range(length):
        c = combos[s0 + j]
        acc = table[qi, c]
        if acc < 0:
            acc = np.float32(0.0)
            for f in range(da):
                acc += abs(avec32[c, f] * w32[f] - q[qi, d + f])
            table[qi, c] = acc
        out[qi, j] = acc
        low = min(low, acc)
    return low


@nb.njit(cache=True, nogil=True, inline="always")
def _box_bound(
    lo: np.ndarray,
    hi: np.ndarray,
    c: int,
    weights: np.ndarray,
    queries: np.ndarray,
    query_weights: np.ndarray,
) -> float:
    """The lower bound of box ``c`` (rows of ``lo``/``hi``, cell-major: one box is two
    cache lines, not a column of the per-feature layout; its first ``queries.shape[1]``
    dimensions) (min over queries), same operations as :func:`_bounds`."""
    best = np.inf
    for qi in range(queries.shape[0]):
        total = 0.0
        for f in range(queries.shape[1]):
            q = queries[qi, f]
            total += weights[f] * max(0.0, lo[c, f] - q, q - hi[c, f])
        best = min(best, total / query_weights[qi])
    return best


@nb.njit(cache=True, nogil=True, inline="always")
def _box_parts(
    lo: np.ndarray,
    hi: np.ndarray,
    c: int,
    weights: np.ndarray,
    queries: np.ndarray,
    qi: int,
    d: int,
) -> tuple[float, float]:
    """One box's bound for query ``qi`` (unweighted), as :func:`_box_bound` sums it: after
    its first ``d`` dimensions (the audio part), and over all of them."""
    total = 0.0
    audio = 0.0
    for f in range(queries.shape[1]):
        if f == d:
            audio = total
        q = queries[qi, f]
        total += weights[f] * max(0.0, lo[c, f] - q, q - hi[c, f])
    if queries.shape[1] == d:
        audio = total
    return audio, total


@nb.njit(cache=True, nogil=True)
def _bounds(
    lo_t: np.ndarray,
    hi_t: np.ndarray,
    weights: np.ndarray,
    queries: np.ndarray,
    query_weights: np.ndarray,
) -> np.ndarray:
    """Lower bounds of every box (columns of ``lo_t``/``hi_t``), vectorized over boxes."""
    n_boxes = lo_t.shape[1]
    bounds = np.full(n_boxes, np.inf)
    acc = np.empty(n_boxes)
    for qi in range(queries.shape[0]):
        acc[:] = 0.0
        for f in range(lo_t.shape[0]):
            q = queries[qi, f]
            w = weights[f]
            lo = lo_t[f]
            hi = hi_t[f]
            for c in range(n_boxes):
                acc[c] += w * max(0.0, lo[c] - q, q - hi[c])
        v = query_weights[qi]
        for c in range(n_boxes):
            bounds[c] = min(bounds[c], acc[c] / v)
    return bounds


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
    lo: np.ndarray,  # cells x dims, float64 box of the search vectors (the first
    hi: np.ndarray,  # queries.shape[1] dimensions are read)
    popularity: np.ndarray,  # n, int16, cell order (-1 unknown)
    cell_min_pop: np.ndarray,  # cells, int16
    by_pop: np.ndarray,  # cells, bool: songs in ascending popularity
    groups: np.ndarray,  # groups + 1, int64: group g holds cells groups[g]:groups[g+1]
    group_lo_t: np.ndarray,  # d x groups: the union of its cells' boxes
    group_hi_t: np.ndarray,
    group_min_pop: np.ndarray,  # groups, int16
    widest: int,  # the most songs in one cell
    max_pop: int,
    queries: np.ndarray,  # nq x (d + da), float64: standardized features, then (blended)
    # the artist vector
    query_weights: np.ndarray,  # nq, float64 in (0, 1]: a query's distances are divided by it
    m: int,
    combos: np.ndarray,  # n, int32, cell order: the song's row of avec (unused when da = 0)
    avec: np.ndarray,  # combinations x da, float64: artist vectors
    avec32: np.ndarray,  # the same, float32
    a_max: np.ndarray,  # da, float64: max |avec|
    cap: int,  # > 0: at most this many songs per combination in the top m (see search)
    blocked: np.ndarray,  # sorted rows never returned
    log_room: int,  # entries of the left-out log (more needed: it comes back empty, with the
    # count it needed, see the end)
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    d = values.shape[0]
    nq = queries.shape[0]
    da = queries.shape[1] - d
    n_groups = groups.size - 1

    # 1. Lower bounds of the groups; 2. a min-heap of those that can hold a candidate.
    bounds = _bounds(group_lo_t, group_hi_t, weights, queries, query_weights)
    keys = np.empty(n_groups)
    ids = np.empty(n_groups, dtype=np.int64)
    size = 0
    for g in range(n_groups):
        if group_min_pop[g] <= max_pop and groups[g + 1] > groups[g]:
            keys[size] = bounds[g]
            ids[size] = g
            size += 1
    for i in range(size // 2 - 1, -1, -1):
        _cell_heap_down(keys, ids, i, size)
    # The float32 estimate w z ~ x * a + b (weights >= 0 folded in) and its error bound
    # (per query: |q| enters).
    a32 = np.empty(d, dtype=np.float32)
    b32 = np.empty(d, dtype=np.float32)
    q32 = np.empty((nq, d + da), dtype=np.float32)
    w32 = np.empty(max(da, 1), dtype=np.float32)
    magnitude = 0.0
    for f in range(d):
        a32[f] = np.float32(weights[f] / (divisors[f] * scales[f]))
        b32[f] = np.float32(-weights[f] * means[f] / scales[f])
    for f in range(da):
        w32[f] = np.float32(weights[d + f])
    q_max = 0.0
    for qi in range(nq):
        s = 0.0
        for f in range(d + da):
            q32[qi, f] = np.float32(weights[f] * queries[qi, f])
            s += weights[f] * abs(queries[qi, f])
        q_max = max(q_max, s)
    for f in range(d):
        magnitude += weights[f] * (value_max[f] + abs(means[f])) / scales[f]
    for f in range(da):
        magnitude += weights[d + f] * a_max[f]
    # Each term passes through ~8 float32 roundings and the sum adds d more: 64 + 4d unit
    # roundoffs of the magnitudes bound the error with room to spare.
    slack = (64.0 + 4.0 * (d + da)) * _U32 * (magnitude + q_max) * 1.0001 + 1e-12
    # The artist part alone has at most that error too; a bound built on it is shrunk by a
    # few float64 roundings more than its sum with the audio part can add.
    part_slack = slack
    shrink = 1.0 - 1e-12
    # Weighted queries: estimates are scaled by 1 / v in float32, which adds a few more
    # roundings (of 1 / v and of the product) relative to the scaled magnitude.
    inv32 = np.empty(nq, dtype=np.float32)
    inv_max = 1.0
    for qi in range(nq):
        inv32[qi] = np.float32(1.0 / query_weights[qi])
        inv_max = max(inv_max, 1.0 / query_weights[qi])
    if inv_max > 1.0:
        slack = (slack + 8.0 * _U32 * (magnitude + q_max)) * inv_max * 1.0001
    weighted = inv_max > 1.0

    hd = np.empty(m)
    hr = np.empty(m, dtype=np.int64)
    hp = np.empty(m, dtype=np.int64)
    hn = np.empty(m, dtype=np.int64)
    hc = np.empty(m, dtype=np.int64)  # the combination of each entry (cap > 0)
    count = 0
    best = np.empty(widest, dtype=np.float32)
    other = np.empty(widest, dtype=np.float32)
    # Per query, each combination's artist part (estimate), filled as combinations are met.
    tables = np.full((nq if da else 0, avec32.shape[0] if da else 0), np.float32(-1.0))
    parts = np.empty((nq if da else 0, widest), dtype=np.float32)
    # The per-combination cap: how many of each combination the top m holds, and the songs
    # it kept out (distance, row), a log the caller checks against the rules.
    held = np.zeros(avec.shape[0] if cap > 0 else 0, dtype=np.int32)
    # A full combination's worst entry (distance, row); valid while held[c] == cap.
    full_d = np.empty(held.size)
    full_r = np.empty(held.size, dtype=np.int64)
    # The log of the left out: (distance or lower bound, row). It never grows here: an array
    # variable rebound inside the loop, or passed to a helper, costs atomic reference counts
    # on every iteration (measured: a fifth of the search); entries past ``log_room`` are
    # only counted, and the caller searches again with the room it needed.
    out_d = np.empty(log_room)
    out_r = np.empty(log_room, dtype=np.int64)
    n_out = 0
    while size > 0:
        if count == m and keys[0] > hd[0]:
            break
        group = ids[0]
        size -= 1
        keys[0] = keys[size]
        ids[0] = ids[size]
        _cell_heap_down(keys, ids, 0, size)
        for cell in range(groups[group], groups[group + 1]):
            if cell_min_pop[cell] > max_pop:
                continue
            if count == m and _box_bound(lo, hi, cell, weights, queries, query_weights) > hd[0]:
                continue
            s0 = starts[cell]
            length = starts[cell + 1] - s0
            if by_pop[cell]:  # the songs under the cap are a prefix: only those
                under = 0
                while under < length and popularity[s0 + under] <= max_pop:
                    under += 1
                length = under
            # 3a. Estimates for the whole cell (vector loops). Blended: the artist parts
            # first (one per combination and query), which tighten the cell's bound: no song
            # of it is nearer than its box's audio bound plus its least artist part.
            if da:
                tight = np.inf
                for qi in range(nq):
                    low = _artist_parts(combos, s0, length, avec32, w32, q32, qi, d, tables, parts)
                    audio, full = _box_parts(lo, hi, cell, weights, queries, qi, d)
                    bound = max(full, audio + max(0.0, np.float64(low) - part_slack) * shrink)
                    tight = min(tight, bound / query_weights[qi])
                if count == m and tight > hd[0]:
                    continue
            _estimate(values, s0, length, a32, b32, q32, 0, best)
            if da:
                for j in range(length):
                    best[j] += parts[0, j]
            if weighted:
                for j in range(length):
                    best[j] = best[j] * inv32[0]
            for qi in range(1, nq):
                _estimate(values, s0, length, a32, b32, q32, qi, other)
                if da:
                    for j in range(length):
                        other[j] += parts[qi, j]
                if weighted:
                    for j in range(length):
                        other[j] = other[j] * inv32[qi]
                for j in range(length):
                    best[j] = min(best[j], other[j])
            # 3b. Exact distances for the songs that may enter the top m.
            for j in range(length):
                p = s0 + j
                if popularity[p] > max_pop:
                    continue
                if count == m and best[j] - slack > hd[0]:
                    continue
                r = np.int64(perm[p])
                if blocked.size and _holds(blocked, r):
                    continue
                c = combos[p] if da or cap > 0 else 0
                if cap > 0 and held[c] >= cap and best[j] - slack > full_d[c]:
                    # Its combination is full and it is surely worse than all of it: left
                    # out, logged with its lower bound (no exact distance needed).
                    if n_out < log_room:
                        out_d[n_out] = best[j] - slack
                        out_r[n_out] = r
                    n_out += 1
                    continue
                dist = np.inf
                near = 0
                for qi in range(nq):
                    total = 0.0
                    for f in range(d):
                        z = (values[f, p] / divisors[f] - means[f]) / scales[f]
                        total += weights[f] * abs(z - queries[qi, f])
                    for f in range(da):
                        total += weights[d + f] * abs(avec[c, f] - queries[qi, d + f])
                    total = total / query_weights[qi]
                    if total < dist:
                        dist = total
                        near = qi
                if count == m and not _worse(hd[0], hr[0], dist, r):
                    continue
                if cap > 0 and held[c] >= cap:
                    # Full for its combination: it replaces that combination's worst entry
                    # if it is better; the one left out goes to the log.
                    if _worse(full_d[c], full_r[c], dist, r):
                        worst = _worst_of(hc, hd, hr, count, c)
                        if n_out < log_room:
                            out_d[n_out] = hd[worst]
                            out_r[n_out] = hr[worst]
                        n_out += 1
                        hd[worst], hr[worst], hp[worst], hn[worst], hc[worst] = dist, r, p, near, c
                        _top_down(hd, hr, hp, hn, hc, count, worst)
                        worst = _worst_of(hc, hd, hr, count, c)
                        full_d[c], full_r[c] = hd[worst], hr[worst]
                    else:
                        if n_out < log_room:
                            out_d[n_out] = dist
                            out_r[n_out] = r
                        n_out += 1
                    continue
                if count < m:
                    hd[count], hr[count], hp[count], hn[count], hc[count] = dist, r, p, near, c
                    _top_up(hd, hr, hp, hn, hc, count)
                    count += 1
                else:
                    if cap > 0:
                        held[hc[0]] -= 1
                    hd[0], hr[0], hp[0], hn[0], hc[0] = dist, r, p, near, c
                    _top_down(hd, hr, hp, hn, hc, count)
                if cap > 0:
                    held[c] += 1
                    if held[c] == cap:
                        worst = _worst_of(hc, hd, hr, count, c)
                        full_d[c], full_r[c] = hd[worst], hr[worst]
    if n_out > log_room:  # the log ran out of room: the caller searches again with more
        return hp[:count], hr[:count], hd[:count], hn[:count], out_d[:0], out_r[:0], n_out
    if count == m:
        # Only songs before the m-th can matter to the caller's proof (it looks at those
        # before its last kept song, or searches again with a larger m): drop the rest.
        kept = 0
        for i in range(n_out):
            if _worse(hd[0], hr[0], out_d[i], out_r[i]):
                out_d[kept] = out_d[i]
                out_r[kept] = out_r[i]
                kept += 1
        n_out = kept
    return hp[:count], hr[:count], hd[:count], hn[:count], out_d[:n_out], out_r[:n_out], n_out


@nb.njit(cache=True, nogil=True)
def left_out_dominated(
    kept_rows: np.ndarray,
    kept_distances: np.ndarray,
    offsets: np.ndarray,
    artists: np.ndarray,
    max_per_artist: int,
    out_d: np.ndarray,
    out_r: np.ndarray,
    bounded: bool,
) -> bool:
    """Whether every song of the left-out log (``out_d``: its distance or a lower bound,
    ``out_r``: its row) comes after ``max_per_artist`` of ``kept_rows`` (the songs the rules
    kept, in distance order, with their distances) sharing one of its artists (``offsets``
    / ``artists``: the index's artist lists per row). With ``bounded`` only the left out
    before the last kept song count. The proof :meth:`ranking._Rules.left_out_never_kept`
    describes, compiled: it ran on every request (Python loops: a fifth of a query)."""
    last = kept_rows.size - 1
    # The artists that reach the cap among the kept songs, and where: (distance, row) of
    # their max_per_artist-th kept song. A playlist keeps few songs: linear scans.
    n_total = 0
    for i in range(kept_rows.size):
        n_total += offsets[kept_rows[i] + 1] - offsets[kept_rows[i]]
    seen = np.empty(n_total, dtype=artists.dtype)
    counts = np.zeros(n_total, dtype=np.int64)
    full = np.empty(n_total, dtype=artists.dtype)
    full_d = np.empty(n_total)
    full_r = np.empty(n_total, dtype=np.int64)
    n_seen = 0
    n_full = 0
    for i in range(kept_rows.size):
        r = kept_rows[i]
        for k in range(offsets[r], offsets[r + 1]):
            a = artists[k]
            j = 0
            while j < n_seen and seen[j] != a:
                j += 1
            if j == n_seen:
                seen[j] = a
                n_seen += 1
            counts[j] += 1
            if counts[j] == max_per_artist:
                full[n_full] = a
                full_d[n_full] = kept_distances[i]
                full_r[n_full] = r
                n_full += 1
    for e in range(out_r.size):
        d = out_d[e]
        r = out_r[e]
        if bounded and not _worse(kept_distances[last], kept_rows[last], d, r):
            continue  # at or after the last kept song: it cannot change what was kept
        capped = False
        for k in range(offsets[r], offsets[r + 1]):
            for j in range(n_full):
                if full[j] == artists[k] and _worse(d, r, full_d[j], full_r[j]):
                    capped = True
        if not capped:
            return False  # also a song without artists: the artist rule never drops it
    return True


@nb.njit(cache=True, nogil=True)
def greedy_rules(
    rows: np.ndarray,
    dedup: np.ndarray,
    offsets: np.ndarray,
    artists: np.ndarray,
    max_per_artist: int,
    seed_keys: np.ndarray,
    blocked: np.ndarray,
    limit: int,
) -> np.ndarray:
    """Positions (into ``rows``, candidates in distance order) of the songs the greedy
    playlist rules keep, at most ``limit``: never a ``blocked`` row (sorted), never a
    duplicate (``dedup``: each candidate's key) of a seed (``seed_keys``) or of a song kept
    before it, at most ``max_per_artist`` songs per artist (``offsets`` / ``artists``: the
    index's artist lists per row; every credited artist counts). Compiled: the Python loop
    ran on every request. A playlist keeps few songs, so the keys and counts are scanned."""
    kept = np.empty(min(limit, rows.size), dtype=np.int64)
    n_kept = 0
    taken = np.empty(seed_keys.size + kept.size, dtype=dedup.dtype)
    taken[: seed_keys.size] = seed_keys
    n_taken = seed_keys.size
    n_total = 0
    for i in range(rows.size):
        n_total += offsets[rows[i] + 1] - offsets[rows[i]]
    seen = np.empty(n_total, dtype=artists.dtype)
    counts = np.zeros(n_total, dtype=np.int64)
    n_seen = 0
    for i in range(rows.size):
        if n_kept == kept.size:
            break
        row = rows[i]
        key = dedup[i]
        duplicate = False
        for t in range(n_taken):
            if taken[t] == key:
                duplicate = True
                break
        if duplicate:
            continue
        if _holds(blocked, row):
            continue
        full = False
        for k in range(offsets[row], offsets[row + 1]):
            for j in range(n_seen):
                if seen[j] == artists[k] and counts[j] >= max_per_artist:
                    full = True
        if full:
            continue
        kept[n_kept] = i
        n_kept += 1
        taken[n_taken] = key
        n_taken += 1
        for k in range(offsets[row], offsets[row + 1]):
            j = 0
            while j < n_seen and seen[j] != artists[k]:
                j += 1
            if j == n_seen:
                seen[j] = artists[k]
                n_seen += 1
            counts[j] += 1
    return kept[:n_kept]


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False  # the same (read-only) array types as the cells': one compile
    return array


_NO_COMBOS = _frozen(np.zeros(1, dtype=np.int32))
_NO_VECTORS = _frozen(np.zeros((1, 1)))
_NO_VECTORS32 = _frozen(np.zeros((1, 1), dtype=np.float32))
_ONE = _frozen(np.ones(1))
_NO_ROWS = np.zeros(0, dtype=np.int64)
#: Room in the left-out log of a search (entries; 1 MB, allocated lazily): a search that
#: needs more runs again with what it needed. Artist-coherent catalogs log ~10,000 at 1M songs.
_LOG_ROOM = 65_536


@dataclass(frozen=True)
class Found:
    """What :func:`search_capped` found, sorted by (distance, row): cell positions, rows,
    distances, nearest query; and every song the per-combination cap kept out, unsorted:
    its row and its distance or a lower bound of it (a song surely beyond its full
    combination is not measured exactly)."""

    positions: np.ndarray
    rows: np.ndarray
    distances: np.ndarray
    nearest: np.ndarray
    left_out_distances: np.ndarray
    left_out_rows: np.ndarray


def search(
    cells: Cells,
    means: np.ndarray,
    scales: np.ndarray,
    weights: np.ndarray,
    queries: np.ndarray,
    m: int,
    max_popularity: int | None = None,
    query_weights: np.ndarray | None = None,
    artist_vectors: ArtistVectors | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``m`` songs of ``cells`` nearest to ``queries`` (rows, standardized) whose
    popularity is at most ``max_popularity`` (None: no cap), sorted by (distance, row):
    their cell positions, rows, distances and nearest query. Fewer when fewer pass.
    ``query_weights`` (one per query, in (0, 1]; None: all 1) divide that query's distances.

    Blended: with ``artist_vectors`` (the cells' combination table), ``queries`` and
    ``weights`` have 9 more dimensions, the artist vector (docs/similarity.md); when those
    weights are all 0 the artist part is skipped (the audio-only kernel)."""
    found = search_capped(
        cells, means, scales, weights, queries, m, max_popularity, query_weights, artist_vectors
    )
    return found.positions, found.rows, found.distances, found.nearest


def search_capped(
    cells: Cells,
    means: np.ndarray,
    scales: np.ndarray,
    weights: np.ndarray,
    queries: np.ndarray,
    m: int,
    max_popularity: int | None = None,
    query_weights: np.ndarray | None = None,
    artist_vectors: ArtistVectors | None = None,
    per_combination: int = 0,
    blocked: np.ndarray | None = None,
) -> Found:
    """:func:`search`, and with ``per_combination`` > 0 (and a blended index) at most that
    many songs of one artist combination among the ``m``: a song past it replaces its
    combination's worst if nearer, and whichever is left out is logged. The playlist rules
    (at most k songs per artist) would drop most of them anyway; the caller checks the log
    (``ranking``) and searches again without the cap when it cannot prove that.
    ``blocked`` rows are never returned (nor logged)."""
    cap = NO_CAP if max_popularity is None else int(min(max_popularity, NO_CAP))
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    d = cells.features.values.shape[0]
    dims = cells.lo.shape[1]
    group_lo_t, group_hi_t = cells.group_lo_t, cells.group_hi_t
    combos, avec, avec32, a_max = _NO_COMBOS, _NO_VECTORS, _NO_VECTORS32, _ONE
    per_combo = 0
    if artist_vectors is not None and cells.combos is not None and per_combination > 0:
        per_combo = int(per_combination)
        combos, avec = cells.combos, artist_vectors.vectors
    if artist_vectors is None or cells.combos is None or not np.any(weights[d:] > 0):
        # Audio only: the boxes' first d dimensions (contiguous rows) bound it exactly.
        queries = np.ascontiguousarray(queries[:, :d])
        weights = weights[:d]
        group_lo_t, group_hi_t = group_lo_t[:d], group_hi_t[:d]
    else:
        if queries.shape[1] != dims or weights.shape[0] != dims:
            raise ValueError(f"blended queries and weights need {dims} dimensions")
        combos, avec = cells.combos, artist_vectors.vectors
        avec32, a_max = artist_vectors.vectors32, artist_vectors.abs_max
    if query_weights is None:
        query_weights = np.ones(queries.shape[0])
    query_weights = np.ascontiguousarray(query_weights, dtype=np.float64)
    if query_weights.shape != (queries.shape[0],) or not np.all(
        (query_weights > 0) & (query_weights <= 1)
    ):
        raise ValueError("query_weights: one weight in (0, 1] per query")
    arguments = (
        cells.features.values,
        cells.divisors,
        np.ascontiguousarray(means, dtype=np.float64),
        np.ascontiguousarray(scales, dtype=np.float64),
        weights,
        cells.value_max,
        cells.perm,
        cells.starts,
        cells.lo,
        cells.hi,
        cells.popularity,
        cells.min_popularity,
        cells.by_popularity,
        cells.groups,
        group_lo_t,
        group_hi_t,
        cells.group_min_popularity,
        max(cells.widest, 1),
        cap,
        queries,
        query_weights,
        max(int(m), 1),
        combos,
        avec,
        avec32,
        a_max,
        per_combo,
    )
    blocked_rows = _NO_ROWS if blocked is None else np.unique(np.asarray(blocked, dtype=np.int64))
    room = _LOG_ROOM
    while True:
        pos, rows, dist, near, out_d, out_r, needed = _search(*arguments, blocked_rows, room)
        if needed <= room:
            break
        room = needed  # the search is deterministic: it needs exactly that much again
    order = np.lexsort((rows, dist))
    return Found(pos[order], rows[order], dist[order], near[order], out_d, out_r)


def warm() -> None:
    """Compile (or load from the on-disk cache) the kernel for both stored value types, and
    the ranking's rules and proof, on small inputs (the benchmarks call it before timing).
    The service warms each index on its own arrays instead (``ranking.warm``): numba
    specializes on exact array types, which these inputs need not share."""
    d, n = 2, 4
    raw = np.arange(d * n, dtype=np.float64).reshape(n, d)
    for values in (raw, raw + 0.123456789012):  # short decimals (int32 codes), and not
        cells = build_cells(values, values, np.zeros(n, dtype=np.int16), leaf=2)
        search(cells, np.zeros(d), np.ones(d), np.ones(d), values[:1], 2)
    artists = np.arange(2, dtype=np.uint64)
    artists.flags.writeable = False  # as the index's artist column holds them
    greedy_rules(
        np.arange(2, dtype=np.int64),
        np.arange(2, dtype=np.uint64),
        np.arange(3, dtype=np.int32),
        artists,
        1,
        np.zeros(0, dtype=np.uint64),
        np.zeros(0, dtype=np.int64),
        2,
    )
    left_out_dominated(
        np.arange(2, dtype=np.int64),
        np.ones(2),
        np.arange(3, dtype=np.int32),
        artists,
        1,
        np.ones(1),
        np.zeros(1, dtype=np.int64),
        True,
    )
