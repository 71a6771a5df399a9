"""The search structure of the exact ranking: the catalog cut into small cells.

Every KMeans cluster (the whole catalog before a model) is split recursively at the median
of its widest standardized feature until each cell holds at most ``leaf`` songs (a KD tree
whose leaves are kept flat). A cell stores its songs' raw features contiguously (this is
the index's only copy of the features, exact, as int32 decimal codes when they are short
decimals: :class:`~emergify_recommender.columns.FeatureMatrix`; standardizing a visited
block on the fly costs a few vector operations and saves a second n x 9 matrix) and the
bounding box of their standardized vectors, which gives an exact lower bound on the L1
distance from any query to any song of the cell: ``sum_d max(0, lo_d - q_d, q_d - hi_d)``,
evaluated for all cells at once in float32 as ``max(|q - centre| - half_width, 0)`` and
then lowered by its rounding error bound, so it stays a true lower bound. The ranking
visits cells in order of that bound and stops once no unvisited cell can hold a better
song.

Cells are built once per full load. The speed layer's new songs are appended as extra
cells; a replaced song's vector is overwritten in place and its cell's box widened, so the
bound stays exact (only a little looser) until the next full load re-partitions.
``cluster`` of a cell is a hint for the visiting order ("the seed's cluster first"),
never used for correctness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emergify_recommender.columns import FeatureMatrix

#: Songs per cell, at most. Small cells prune finely, but every query bounds every cell,
#: so :func:`leaf_for` keeps the count of cells near ``_CELLS_TARGET``: 32 songs per cell
#: up to 160k songs, 192 from ~1M (measured: bench/ranking_speed.py at 100k and 1M).
MIN_LEAF, MAX_LEAF = 32, 192
_CELLS_TARGET = 5_000


def leaf_for(n: int) -> int:
    """The cell size for a catalog of ``n`` songs."""
    return int(min(MAX_LEAF, max(MIN_LEAF, n // _CELLS_TARGET)))


#: Unit roundoff of float32: bounds the rounding of the float32 lower bounds.
_U32 = float(np.finfo(np.float32).eps) / 2


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _split(z: np.ndarray, rows: np.ndarray, leaf: int, out: list[np.ndarray]) -> None:
    """Append to ``out`` the leaves of a median KD split of ``rows`` (iterative)."""
    stack = [rows]
    while stack:
        part = stack.pop()
        if part.size <= leaf:
            out.append(part)
            continue
        block = z[part]
        dim = int(np.argmax(block.max(axis=0) - block.min(axis=0)))
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
    features: FeatureMatrix  # features x positions (transposed: per-feature rows make the
    # 9-term sums plain vector adds), exactly the features as stored
    starts: np.ndarray  # cells + 1, int64: cell c holds positions starts[c]:starts[c+1]
    lo: np.ndarray  # cells x features, float64 bounds of the standardized vectors
    hi: np.ndarray
    centre: np.ndarray  # features x cells, float32 (lo + hi) / 2
    half: np.ndarray  # features x cells, float32 (hi - lo) / 2
    cluster: np.ndarray  # cells, int32: the cluster the cell was cut from (-1 before a model)
    box_l1: float  # largest sum_d max(|lo_d|, |hi_d|): scales the float32 rounding error
    leaf: int = MAX_LEAF  # songs per cell at most (new songs are cut the same way)

    @property
    def n_cells(self) -> int:
        return int(self.starts.size - 1)

    def lower_bounds(self, queries: np.ndarray) -> np.ndarray:
        """Per cell, a lower bound on the L1 distance from the nearest query (rows of
        ``queries``, standardized) to any of its songs."""
        queries = np.atleast_2d(queries)
        best = None
        for q in queries.astype(np.float32):
            gap = self.centre - q[:, None]
            np.abs(gap, out=gap)
            gap -= self.half
            np.maximum(gap, 0.0, out=gap)
            bound = gap.sum(axis=0)
            best = bound if best is None else np.minimum(best, bound, out=best)
        assert best is not None
        # float32 rounding of centre, half width, query and the 2 x 9 operations moves the
        # bound by at most ~12u times the magnitudes; 32u of them keeps it a true bound.
        slack = 32.0 * _U32 * (self.box_l1 + float(np.abs(queries).sum(axis=1).max())) + 1e-12
        return best.astype(np.float64) - slack

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
        arrays = (self.perm, self.where, self.starts, self.lo, self.hi, self.centre, self.half)
        return sum(a.nbytes for a in arrays) + self.cluster.nbytes + self.features.nbytes


def _index_dtype(n: int) -> type:
    return np.int32 if n < 2**31 - 1 else np.int64


def _assemble(
    leaves: list[np.ndarray], z: np.ndarray, raw: np.ndarray, clusters: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """perm, raw (features x songs, cell order), starts, lo, hi, cluster of ``leaves``
    (rows of ``z``)."""
    leaves = [leaf for leaf in leaves if leaf.size]
    d = z.shape[1]
    if not leaves:
        return (
            np.empty(0, dtype=_index_dtype(n_rows)),
            np.empty((d, 0)),
            np.zeros(1, dtype=np.int64),
            np.empty((0, d)),
            np.empty((0, d)),
            np.empty(0, dtype=np.int32),
        )
    perm = np.concatenate(leaves)
    sizes = np.fromiter((leaf.size for leaf in leaves), dtype=np.int64, count=len(leaves))
    starts = np.zeros(len(leaves) + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    ordered = z[perm]
    lo = np.minimum.reduceat(ordered, starts[:-1], axis=0)
    hi = np.maximum.reduceat(ordered, starts[:-1], axis=0)
    del ordered
    cluster = clusters[perm[starts[:-1]]].astype(np.int32)
    raw_t = np.ascontiguousarray(raw.T).take(perm, axis=1)
    return perm.astype(_index_dtype(n_rows)), raw_t, starts, lo, hi, cluster


def _cells(
    perm: np.ndarray,
    features: FeatureMatrix,
    starts: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    cluster: np.ndarray,
    leaf: int,
) -> Cells:
    where = np.empty(perm.size, dtype=perm.dtype)
    where[perm] = np.arange(perm.size, dtype=perm.dtype)
    box_l1 = float(np.maximum(np.abs(lo), np.abs(hi)).sum(axis=1).max()) if lo.size else 0.0
    return Cells(
        perm=_readonly(perm),
        where=_readonly(where),
        features=features,
        starts=_readonly(starts),
        lo=_readonly(lo),
        hi=_readonly(hi),
        centre=_readonly(np.ascontiguousarray(((lo + hi) / 2).T, dtype=np.float32)),
        half=_readonly(np.ascontiguousarray(((hi - lo) / 2).T, dtype=np.float32)),
        cluster=_readonly(cluster),
        box_l1=box_l1,
        leaf=leaf,
    )


def build_cells(
    raw: np.ndarray, z: np.ndarray, clusters: np.ndarray, leaf: int | None = None
) -> Cells:
    """Cells of every row (``raw`` features and their standardized ``z``, both n x
    features, float64), cut within each cluster (``leaf``: :func:`leaf_for` by default)."""
    n = z.shape[0]
    leaf = leaf or leaf_for(n)
    order = np.argsort(clusters, kind="stable")
    bounds = np.flatnonzero(np.diff(clusters[order])) + 1
    leaves: list[np.ndarray] = []
    for part in np.split(order, bounds):
        if part.size:
            _split(z, part, leaf, leaves)
    perm, raw_t, starts, lo, hi, cluster = _assemble(leaves, z, raw, clusters, n)
    return _cells(perm, FeatureMatrix.pack(raw_t), starts, lo, hi, cluster, leaf)


def updated_cells(
    cells: Cells,
    replaced_rows: np.ndarray,
    replaced_raw: np.ndarray,
    replaced_z: np.ndarray,
    new_rows: np.ndarray,
    new_raw: np.ndarray,
    new_z: np.ndarray,
    new_clusters: np.ndarray,
) -> Cells:
    """Cells with ``replaced_rows`` overwritten (their boxes widened) and ``new_rows``
    (numbered after the existing rows) appended as new cells cut per cluster like a full
    build. Arrays are copied, never mutated."""
    lo, hi = cells.lo, cells.hi
    pos = cells.where[replaced_rows]
    added = np.empty((replaced_raw.shape[1], 0))
    if replaced_rows.size:
        owner = np.searchsorted(cells.starts, pos, side="right") - 1
        lo, hi = lo.copy(), hi.copy()
        np.minimum.at(lo, owner, replaced_z)
        np.maximum.at(hi, owner, replaced_z)
    perm, starts, cluster = cells.perm, cells.starts, cells.cluster
    if new_rows.size:
        local = np.arange(new_rows.size)
        order = np.argsort(new_clusters, kind="stable")
        bounds = np.flatnonzero(np.diff(new_clusters[order])) + 1
        leaves: list[np.ndarray] = []
        for part in np.split(local[order], bounds):
            if part.size:
                _split(new_z, part, cells.leaf, leaves)
        n_total = perm.size + new_rows.size
        p_new, raw_new, s_new, lo_new, hi_new, c_new = _assemble(
            leaves, new_z, new_raw, new_clusters, n_total
        )
        dtype = _index_dtype(n_total)
        perm = np.concatenate([perm.astype(dtype), new_rows[p_new].astype(dtype)])
        added = raw_new
        starts = np.concatenate([starts, starts[-1] + s_new[1:]])
        lo, hi = np.concatenate([lo, lo_new]), np.concatenate([hi, hi_new])
        cluster = np.concatenate([cluster, c_new])
    features = cells.features
    if pos.size or added.shape[1]:
        features = features.updated(pos, replaced_raw.T, added)
    return _cells(perm, features, starts, lo, hi, cluster, cells.leaf)
