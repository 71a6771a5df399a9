"""The current clustering model as NumPy arrays, in the serving layer's feature order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from emergify_contracts.model import FEATURE_ORDER, PortableModel
from emergify_contracts.song import AUDIO_FEATURES


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A :class:`PortableModel` as the serving layer holds it: the maths is the portable
    model's own (standardize -> project -> nearest centroid, one feature order), shared with
    the stream processor; this adds the model's metrics and read-only array views."""

    portable: PortableModel
    metrics: Mapping[str, Any]
    means: np.ndarray
    scales: np.ndarray  # zeros replaced by 1, as the portable model does
    components: np.ndarray  # features x pcs
    centroids: np.ndarray  # k x pcs

    @classmethod
    def from_portable(
        cls, portable: PortableModel, metrics: Mapping[str, Any] | None = None
    ) -> LoadedModel:
        """Check the artifact (the portable model raises ValueError naming what is wrong)."""
        if tuple(FEATURE_ORDER) != tuple(AUDIO_FEATURES):
            raise ValueError("the portable model's feature order is not the serving layer's")
        arrays = portable.arrays()
        if not len(arrays.centroids):
            raise ValueError(f"model v{portable.version}: centroids must be k x pcs, k >= 1")
        return cls(
            portable=portable,
            metrics=MappingProxyType(dict(metrics or {})),
            means=arrays.means,
            scales=arrays.scales,
            components=arrays.components,
            centroids=arrays.centroids,
        )

    @property
    def version(self) -> int:
        return self.portable.version

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def project(self, z: np.ndarray) -> np.ndarray:
        """PCA coordinates of standardized vectors."""
        return self.portable.project(z)

    def nearest_centroid(self, pcs: np.ndarray) -> np.ndarray:
        """Cluster id of each row of PCA coordinates (as KMeans assigns)."""
        return self.portable.nearest_centroid(pcs)
