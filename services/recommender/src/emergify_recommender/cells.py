"""The search structure of the exact ranking: the catalog cut into small cells.

The catalog is split recursively at the median of its widest standardized feature until
each cell holds at most ``leaf`` songs (a KD tree whose leaves are kept flat). A cell
stores its songs' raw features contiguously (this is the index's only copy of the
features, exact, as int32 decimal codes when they are short decimals:
:class:`~emergify_recommender.columns.FeatureMatrix`), their popularity, and the bounding
box of their standardized vectors, which gives an exact lower bound on the distance from
any query to any song of the cell. :mod:`emergify_recommender.nearest` visits cells
best-first by that bound.

Cells are built once per full load. The speed layer's new songs are appended as extra
cells; a replaced song's values are overwritten in place and its cell's box widened, so the
bound stays exact (only a little looser) until the next full load re-partitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emergify_recommender.columns import FeatureMatrix

#: Songs per cell, at most. Small cells prune finely; every query bounds every group of
#: cells, so :func:`leaf_for` keeps the count of cells near ``_CELLS_TARGET`` (tuned with
#: bench/ranking_speed.py).
MIN_LEAF, MAX_LEAF = 32, 256
_CELLS_TARGET = 8_192
#: Cells per group (the coarse boxes bounded first).
GROUP = 8


def leaf_for(n: int) -> int:
    """The cell size for a catalog of ``n`` songs."""
    return int(min(MAX_LEAF, max(MIN_LEAF, n // _CELLS_TARGET)))


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _split(
    z: np.ndarray,
    rows: np.ndarray,
    leaf: int,
    out: list[np.ndarray],
    split_weights: np.ndarray | None = None,
) -> None:
    """Append to ``out`` the leaves of a median KD split of ``rows`` (iterative), each time
    on the dimension of widest spread times its ``split_weights`` (default 1)."""
    stack = [rows]
    while stack:
        part = stack.pop()
        if part.size <= leaf:
            out.append(part)
            continue
        block = z[part]
        spread = block.max(axis=0) - block.min(axis=0)
        if split_weights is not None:
            spread = spread * split_weights
        dim = int(np.argmax(spread))
        mid = part.size // 2
        order = np.argpartition(block[:, dim], mid)
        # Push the right half first so leaves come out left to right (nearby in memory).
        stack.append(part[order[mid:]])
        stack.append(part[order[:mid]])


@dataclass(frozen=True, eq=False)
class Cells:
    """Songs in cell order: ``perm[i]`` is the index row at cell position ``i``."""

    perm: np.ndarray  # positions -> rows (int32 while n < 2**31)
    where: np.ndarray  # rows -> positions
    features: FeatureMatrix  # features x positions (per-feature rows: vector loops),
    # exactly the features as stored
    popularity: np.ndarray  # positions, int16 (-1 = unknown)
    starts: np.ndarray  # cells + 1, int64: cell c holds positions starts[c]:starts[c+1]
    lo: np.ndarray  # cells x dims, float64 bounds of the search vectors: the standardized
    # features, then (blended index) the songs' artist vectors
    hi: np.ndarray
    min_popularity: np.ndarray  # cells, int16: the lowest popularity in the cell
    by_popularity: np.ndarray  # cells, bool: its songs are in ascending popularity (so the
    # songs under a popularity cap are a prefix); a replaced song can break it
    value_max: np.ndarray  # features, float64: largest |value| stored (bounds the error
    # of the kernel's float32 estimates)
    groups: np.ndarray  # groups + 1, int64: group g holds cells groups[g]:groups[g+1]
    group_lo_t: np.ndarray  # features x groups: the union of its cells' boxes
    group_hi_t: np.ndarray
    group_min_popularity: np.ndarray  # groups, int16
    widest: int  # the most songs in one cell
    leaf: int = MAX_LEAF  # songs per cell at most (new songs are cut the same way)
    combos: np.ndarray | None = None  # positions, int32: each song's row in the artist
    # combination table (None: the index ranks by audio only)
    split_weights: np.ndarray | None = None  # dims: what the KD split weighs spreads by

    @property
    def n_cells(self) -> int:
        return int(self.starts.size - 1)

    @property
    def divisors(self) -> np.ndarray:
        """Per feature, what the stored values are divided by to give the features."""
        if self.features.divisors is None:
            return np.ones(self.features.values.shape[0])
        return self.features.divisors

    def rows_raw(self, positions: np.ndarray | int) -> np.ndarray:
        """Float64 features of the songs at ``positions`` (features x len, a copy)."""
        return self.features.take(positions)

    def block(self, cells: np.ndarray) -> np.ndarray:
        """Cell positions of every song of ``cells`` (concatenated, vectorized)."""
        first = self.starts[cells]
        lengths = self.starts[cells + 1] - first
        shift = np.repeat(first - (np.cumsum(lengths) - lengths), lengths)
        return shift + np.arange(int(lengths.sum()))

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes."""
        arrays = (
            self.perm,
            self.where,
            self.popularity,
            self.starts,
            self.lo,
            self.hi,
            self.min_popularity,
            self.by_popularity,
            self.groups,
            self.group_lo_t,
            self.group_hi_t,
            self.group_min_popularity,
        )
        combos = 0 if self.combos is None else self.combos.nbytes
        return sum(a.nbytes for a in arrays) + self.features.nbytes + combos


def _index_dtype(n: int) -> type:
    return np.int32 if n < 2**31 - 1 else np.int64


def _assemble(
    leaves: list[np.ndarray], z: np.ndarray, raw: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """perm, raw (features x songs, cell order), starts, lo, hi of ``leaves`` (rows of
    ``z``)."""
    leaves = [leaf for leaf in leaves if leaf.size]
    d = z.shape[1]
    if not leaves:
        return (
            np.empty(0, dtype=_index_dtype(n_rows)),
            np.empty((d, 0)),
            np.zeros(1, dtype=np.int64),
            np.empty((0, d)),
            np.empty((0, d)),
        )
    perm = np.concatenate(leaves)
    sizes = np.fromiter((leaf.size for leaf in leaves), dtype=np.int64, count=len(leaves))
    starts = np.zeros(len(leaves) + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    ordered = z[perm]
    lo = np.minimum.reduceat(ordered, starts[:-1], axis=0)
    hi = np.maximum.reduceat(ordered, starts[:-1], axis=0)
    del ordered
    raw_t = np.ascontiguousarray(raw.T).take(perm, axis=1)
    return perm.astype(_index_dtype(n_rows)), raw_t, starts, lo, hi


def _cells(
    perm: np.ndarray,
    features: FeatureMatrix,
    popularity: np.ndarray,
    starts: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    value_max: np.ndarray,
    by_popularity: np.ndarray,
    leaf: int,
    combos: np.ndarray | None = None,
    split_weights: np.ndarray | None = None,
) -> Cells:
    where = np.empty(perm.size, dtype=perm.dtype)
    where[perm] = np.arange(perm.size, dtype=perm.dtype)
    if starts.size > 1:
        min_pop = np.minimum.reduceat(popularity, starts[:-1]).astype(np.int16)
        min_pop[starts[1:] == starts[:-1]] = np.iinfo(np.int16).max  # empty cells
    else:
        min_pop = np.empty(0, dtype=np.int16)
    n_cells = starts.size - 1
    # Consecutive cells are neighbours in the KD order: GROUP of them make one coarse box,
    # so a query bounds n / (leaf * GROUP) boxes up front and a cell only when its group
    # is visited.
    groups = np.append(np.arange(0, n_cells, GROUP, dtype=np.int64), n_cells)
    if n_cells:
        group_lo = np.minimum.reduceat(lo, groups[:-1], axis=0)
        group_hi = np.maximum.reduceat(hi, groups[:-1], axis=0)
        group_min_pop = np.minimum.reduceat(min_pop, groups[:-1]).astype(np.int16)
    else:
        group_lo = group_hi = np.empty((0, lo.shape[1]))
        group_min_pop = np.empty(0, dtype=np.int16)
    return Cells(
        perm=_readonly(perm),
        where=_readonly(where),
        features=features,
        popularity=_readonly(popularity),
        starts=_readonly(starts),
        lo=_readonly(lo),
        hi=_readonly(hi),
        min_popularity=_readonly(min_pop),
        by_popularity=_readonly(by_popularity),
        value_max=_readonly(np.asarray(value_max, dtype=np.float64)),
        groups=_readonly(groups),
        group_lo_t=_readonly(np.ascontiguousarray(group_lo.T)),
        group_hi_t=_readonly(np.ascontiguousarray(group_hi.T)),
        group_min_popularity=_readonly(group_min_pop),
        widest=int(np.diff(starts).max()) if n_cells else 0,
        leaf=leaf,
        combos=None if combos is None else _readonly(combos),
        split_weights=split_weights,
    )


def _popularity16(popularity: np.ndarray) -> np.ndarray:
    # The kernel compares int16; popularity is 0-100 (or -1), wider values are clamped.
    return np.clip(popularity, -1, np.iinfo(np.int16).max - 1).astype(np.int16)


def _by_popularity(leaves: list[np.ndarray], popularity: np.ndarray) -> list[np.ndarray]:
    return [leaf[np.argsort(popularity[leaf], kind="stable")] for leaf in leaves]


def _abs_max(raw: np.ndarray) -> np.ndarray:
    return np.abs(raw).max(axis=0) if raw.shape[0] else np.zeros(raw.shape[1])


def _combo32(combos: np.ndarray | None, order: np.ndarray) -> np.ndarray | None:
    return None if combos is None else np.asarray(combos, dtype=np.int32)[order]


def build_cells(
    raw: np.ndarray,
    z: np.ndarray,
    popularity: np.ndarray,
    leaf: int | None = None,
    combos: np.ndarray | None = None,
    split_weights: np.ndarray | None = None,
) -> Cells:
    """Cells of every row (``raw`` features, n x features, and the search vectors ``z``,
    n x dims, both float64; ``popularity`` per row, -1 unknown); ``leaf``: :func:`leaf_for`
    by default. A blended index passes ``z`` = ``[z, a]`` (features, then artist vectors),
    each song's artist ``combos`` row, and ``split_weights`` (the default distance's
    per-dimension weights), so cells are tight in the weighted space the queries search."""
    n = z.shape[0]
    leaf = leaf or leaf_for(n)
    leaves: list[np.ndarray] = []
    if n:
        _split(z, np.arange(n), leaf, leaves, split_weights)
    popularity = _popularity16(np.asarray(popularity))
    perm, raw_t, starts, lo, hi = _assemble(_by_popularity(leaves, popularity), z, raw, n)
    return _cells(
        perm,
        FeatureMatrix.pack(raw_t),
        popularity[perm],
        starts,
        lo,
        hi,
        _abs_max(raw),
        np.ones(starts.size - 1, dtype=bool),
        leaf,
        _combo32(combos, perm),
        split_weights,
    )


def _owners(cells: Cells, pos: np.ndarray) -> np.ndarray:
    return np.searchsorted(cells.starts, pos, side="right") - 1


def updated_cells(
    cells: Cells,
    replaced_rows: np.ndarray,
    replaced_raw: np.ndarray,
    replaced_z: np.ndarray,
    replaced_popularity: np.ndarray,
    new_rows: np.ndarray,
    new_raw: np.ndarray,
    new_z: np.ndarray,
    new_popularity: np.ndarray,
    replaced_combos: np.ndarray | None = None,
    new_combos: np.ndarray | None = None,
) -> Cells:
    """Cells with ``replaced_rows`` overwritten (their boxes widened) and ``new_rows``
    (numbered after the existing rows) appended as new cells cut like a full build. Arrays
    are copied, never mutated. ``*_z`` are search vectors (as :func:`build_cells`'s);
    ``*_combos`` their combination rows when the cells have them."""
    lo, hi = cells.lo, cells.hi
    pos = cells.where[replaced_rows]
    added = np.empty((replaced_raw.shape[1], 0))
    popularity = cells.popularity
    by_popularity = cells.by_popularity
    combos = cells.combos
    if replaced_rows.size:
        owner = _owners(cells, pos)
        lo, hi = lo.copy(), hi.copy()
        np.minimum.at(lo, owner, replaced_z)
        np.maximum.at(hi, owner, replaced_z)
        popularity = popularity.copy()
        popularity[pos] = _popularity16(replaced_popularity)
        by_popularity = by_popularity.copy()
        by_popularity[owner] = False
        if combos is not None and replaced_combos is not None:
            combos = combos.copy()
            combos[pos] = replaced_combos
    perm, starts = cells.perm, cells.starts
    if new_rows.size:
        leaves: list[np.ndarray] = []
        _split(new_z, np.arange(new_rows.size), cells.leaf, leaves, cells.split_weights)
        n_total = perm.size + new_rows.size
        new_pop = _popularity16(new_popularity)
        p_new, raw_new, s_new, lo_new, hi_new = _assemble(
            _by_popularity(leaves, new_pop), new_z, new_raw, n_total
        )
        dtype = _index_dtype(n_total)
        perm = np.concatenate([perm.astype(dtype), new_rows[p_new].astype(dtype)])
        added = raw_new
        starts = np.concatenate([starts, starts[-1] + s_new[1:]])
        lo, hi = np.concatenate([lo, lo_new]), np.concatenate([hi, hi_new])
        popularity = np.concatenate([popularity, new_pop[p_new]])
        by_popularity = np.concatenate([by_popularity, np.ones(s_new.size - 1, dtype=bool)])
        if combos is not None and new_combos is not None:
            combos = np.concatenate([combos, np.asarray(new_combos, dtype=np.int32)[p_new]])
    features = cells.features
    if pos.size or added.shape[1]:
        features = features.updated(pos, replaced_raw.T, added)
    value_max = np.maximum(
        cells.value_max,
        np.maximum(_abs_max(replaced_raw), _abs_max(added.T)),
    )
    return _cells(
        perm,
        features,
        popularity,
        starts,
        lo,
        hi,
        value_max,
        by_popularity,
        cells.leaf,
        combos,
        cells.split_weights,
    )


def widened_cells(cells: Cells, rows: np.ndarray, vectors: np.ndarray) -> Cells:
    """Cells whose boxes also cover ``vectors`` (search vectors of ``rows``, whose artist
    vectors changed): a widened box is still a valid bound; the next full load tightens it."""
    if not rows.size:
        return cells
    owner = _owners(cells, cells.where[rows])
    lo, hi = cells.lo.copy(), cells.hi.copy()
    np.minimum.at(lo, owner, vectors)
    np.maximum.at(hi, owner, vectors)
    return _cells(
        cells.perm,
        cells.features,
        cells.popularity,
        cells.starts,
        lo,
        hi,
        cells.value_max,
        cells.by_popularity,
        cells.leaf,
        cells.combos,
        cells.split_weights,
    )
