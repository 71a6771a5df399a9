"""The portable model: what the batch layer exports and the recommender loads without Spark.

It owns the maths that turns a song's features into its cluster (standardize -> project ->
nearest centroid), so the stream processor and the recommender cannot disagree on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from emergify_contracts.song import AUDIO_FEATURES

#: The column order of every feature matrix the methods below take: :data:`AUDIO_FEATURES`,
#: whatever order the model was trained in (its ``features``).
FEATURE_ORDER: tuple[str, ...] = tuple(AUDIO_FEATURES)


@dataclass(frozen=True)
class _Arrays:
    means: np.ndarray  # features, FEATURE_ORDER
    scales: np.ndarray  # features, FEATURE_ORDER, zeros replaced by 1
    components: np.ndarray  # features (FEATURE_ORDER) x pcs
    centroids: np.ndarray  # k x pcs


class PortableModel(BaseModel):
    """StandardScaler -> PCA -> KMeans, as plain numbers.

    ``z = (x - means) / scales``; ``p = z @ components`` (components is features x pcs);
    the cluster is the nearest centroid to ``p`` (Euclidean, as KMeans assigns). The stored
    lists follow ``features``; the methods take and return :data:`FEATURE_ORDER` columns.
    """

    version: int
    trained_at: datetime
    features: list[str] = Field(default_factory=lambda: list(AUDIO_FEATURES))
    means: list[float]
    scales: list[float]
    components: list[list[float]]
    centroids: list[list[float]]
    k: int
    silhouette: float
    songs: int
    explained_variance: list[float] = Field(default_factory=list)

    _arrays: _Arrays | None = PrivateAttr(default=None)

    def arrays(self) -> _Arrays:
        """The numbers as read-only float64 arrays in :data:`FEATURE_ORDER`, checked once.

        Raises ValueError naming what is wrong with an artifact whose shapes do not fit.
        """
        if self._arrays is not None:
            return self._arrays
        missing = [f for f in FEATURE_ORDER if f not in self.features]
        if missing:
            raise ValueError(f"model v{self.version} lacks features: {', '.join(missing)}")
        order = [self.features.index(f) for f in FEATURE_ORDER]
        n = len(self.features)
        means = np.asarray(self.means, dtype=np.float64)
        scales = np.asarray(self.scales, dtype=np.float64)
        components = np.asarray(self.components, dtype=np.float64)
        centroids = np.asarray(self.centroids, dtype=np.float64)
        if means.shape != (n,) or scales.shape != (n,):
            raise ValueError(f"model v{self.version}: means and scales need one value per feature")
        if components.ndim != 2 or components.shape[0] != n:
            raise ValueError(f"model v{self.version}: components must be features x pcs")
        if centroids.ndim != 2 or centroids.shape[1] != components.shape[1] or not len(centroids):
            raise ValueError(f"model v{self.version}: centroids must be k x pcs, k >= 1")
        # A constant feature has scale 0; Spark's StandardScaler then outputs 0, as x/1 does.
        scales = np.where(scales > 0, scales, 1.0)
        arrays = _Arrays(
            means=means[order],
            scales=scales[order],
            components=components[order],
            centroids=centroids,
        )
        for a in (arrays.means, arrays.scales, arrays.components, arrays.centroids):
            a.flags.writeable = False
        self._arrays = arrays
        return arrays

    def standardize(self, X: np.ndarray) -> np.ndarray:
        """``(X - means) / scales`` for ``X`` of shape (n, 9) or (9,), :data:`FEATURE_ORDER`."""
        a = self.arrays()
        return (np.asarray(X, dtype=np.float64) - a.means) / a.scales

    def project(self, Z: np.ndarray) -> np.ndarray:
        """PCA coordinates ``Z @ components`` of standardized rows: shape (n, pcs)."""
        return np.asarray(Z, dtype=np.float64) @ self.arrays().components

    def nearest_centroid(self, P: np.ndarray) -> np.ndarray:
        """Cluster id (int64) of each row of PCA coordinates ``P`` (n x pcs): the nearest
        centroid by exact squared Euclidean distance, the first of equally near ones (as
        Spark's KMeans and ``argmin`` pick)."""
        centroids = self.arrays().centroids
        P = np.asarray(P, dtype=np.float64).reshape(-1, centroids.shape[1])
        # Exact squared distances (no ||p||^2 - 2p.c shortcut, whose rounding could flip
        # near-ties against Spark), one centroid at a time: no n x k x pcs temporary, and the
        # strict "<" keeps the first of equally near centroids.
        best = ((P - centroids[0]) ** 2).sum(axis=1)
        out = np.zeros(P.shape[0], dtype=np.int64)
        for j in range(1, centroids.shape[0]):
            d = ((P - centroids[j]) ** 2).sum(axis=1)
            nearer = d < best
            best = np.where(nearer, d, best)
            out[nearer] = j
        return out

    def assign(self, X: np.ndarray) -> np.ndarray:
        """Cluster id (int64) of each row of raw features ``X`` (n x 9, :data:`FEATURE_ORDER`):
        standardize -> project -> nearest centroid; an empty ``X`` gives an empty result."""
        X = np.asarray(X, dtype=np.float64).reshape(-1, len(FEATURE_ORDER))
        if X.shape[0] == 0:
            return np.empty(0, dtype=np.int64)
        return self.nearest_centroid(self.project(self.standardize(X)))
