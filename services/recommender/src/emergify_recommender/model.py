"""The current clustering model as NumPy arrays, in the serving layer's feature order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES

_ASSIGN_CHUNK = 16_384


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A :class:`PortableModel` as arrays, in :data:`AUDIO_FEATURES` order."""

    portable: PortableModel
    metrics: Mapping[str, Any]
    means: np.ndarray
    scales: np.ndarray
    components: np.ndarray  # features x pcs
    centroids: np.ndarray  # k x pcs

    @classmethod
    def from_portable(
        cls, portable: PortableModel, metrics: Mapping[str, Any] | None = None
    ) -> LoadedModel:
        """Check the artifact's shapes and reorder its features to ours if needed."""
        missing = [f for f in AUDIO_FEATURES if f not in portable.features]
        if missing:
            raise ValueError(f"model v{portable.version} lacks features: {', '.join(missing)}")
        order = [portable.features.index(f) for f in AUDIO_FEATURES]
        means = np.asarray(portable.means, dtype=np.float64)[order]
        scales = np.asarray(portable.scales, dtype=np.float64)[order]
        components = np.asarray(portable.components, dtype=np.float64)
        centroids = np.asarray(portable.centroids, dtype=np.float64)
        if components.ndim != 2 or components.shape[0] != len(portable.features):
            raise ValueError(f"model v{portable.version}: components must be features x pcs")
        components = components[order]
        if centroids.ndim != 2 or centroids.shape[1] != components.shape[1] or not len(centroids):
            raise ValueError(f"model v{portable.version}: centroids must be k x pcs, k >= 1")
        # A constant feature has scale 0; Spark's StandardScaler then outputs 0, as does x/1.
        scales = np.where(scales > 0, scales, 1.0)
        return cls(
            portable=portable,
            metrics=MappingProxyType(dict(metrics or {})),
            means=_readonly(means),
            scales=_readonly(scales),
            components=_readonly(components),
            centroids=_readonly(centroids),
        )

    @property
    def version(self) -> int:
        return self.portable.version

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def project(self, z: np.ndarray) -> np.ndarray:
        """PCA coordinates of standardized vectors (``z @ components``)."""
        return z @ self.components

    def assign(self, pcs: np.ndarray) -> np.ndarray:
        """Nearest centroid (Euclidean, as KMeans assigns) of each row of ``pcs``."""
        out = np.empty(pcs.shape[0], dtype=np.int64)
        # In chunks: rows x k x pcs temporaries for a million rows would cost gigabytes.
        for start in range(0, pcs.shape[0], _ASSIGN_CHUNK):
            part = pcs[start : start + _ASSIGN_CHUNK]
            d2 = ((part[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
            out[start : start + part.shape[0]] = d2.argmin(axis=1)
        return out
