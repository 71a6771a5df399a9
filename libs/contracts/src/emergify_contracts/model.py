"""The portable model: what the batch layer exports and the recommender loads without Spark."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from emergify_contracts.song import AUDIO_FEATURES


class PortableModel(BaseModel):
    """StandardScaler -> PCA -> KMeans, as plain numbers.

    ``z = (x - means) / scales``; ``p = z @ components`` (components is features x pcs);
    the cluster is the nearest centroid to ``p`` (Euclidean, as KMeans assigns).
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
