"""The 2-D picture of the catalog: first two PCA coordinates, for plotting the clusters."""

from __future__ import annotations

import numpy as np

from emergify_recommender.index import SongIndex


def sample_rows(index: SongIndex, size: int) -> np.ndarray:
    """A deterministic sample of ``size`` rows: those with the smallest hash of their track
    id. The same song stays in the sample as the catalog grows, so plots do not flicker."""
    n = len(index)
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.argpartition(index.sample_keys, size - 1)[:size])


def plane(index: SongIndex, rows: np.ndarray) -> np.ndarray:
    """``rows`` x 2: the first two PCA coordinates (the second is 0 for a 1-component model)."""
    out = np.zeros((rows.size, 2))
    pcs = index.pcs_of(rows)
    width = min(2, pcs.shape[1])
    out[:, :width] = pcs[:, :width]
    return out
