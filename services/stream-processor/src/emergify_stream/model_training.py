"""The batch layer: train the clustering model on the feature table with Spark ML.

VectorAssembler(AUDIO_FEATURES) -> StandardScaler(mean, std) -> PCA -> KMeans, with k chosen
in ``[k_min, k_max]`` by silhouette (ClusteringEvaluator, on a sample when the catalog is
big). The winner is saved as a Spark PipelineModel and exported as a
:class:`~emergify_contracts.model.PortableModel` into the registry, which re-assigns every
song's cluster; then ``ModelPublished`` goes out on the models topic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
import structlog
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import PCA, PCAModel, StandardScaler, StandardScalerModel, VectorAssembler
from pyspark.sql import DataFrame, SparkSession
from sqlalchemy.engine import Engine

from emergify_contracts.events import ModelPublished
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import songs
from emergify_stream.config import Settings
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.publisher import EventPublisher

log = structlog.get_logger()


def load_catalog(engine: Engine) -> pd.DataFrame:
    """Track ids and the nine audio features of every song in the feature table."""
    query = sa.select(songs.c.track_id, *(songs.c[f] for f in AUDIO_FEATURES)).order_by(
        songs.c.track_id
    )
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=["track_id", *AUDIO_FEATURES])


def catalog_frame(spark: SparkSession, catalog: pd.DataFrame) -> DataFrame:
    """The catalog as a Spark DataFrame (Arrow; JDBC is not available here)."""
    frame = catalog.astype({f: "float64" for f in AUDIO_FEATURES})
    schema = "track_id string, " + ", ".join(f"{f} double" for f in AUDIO_FEATURES)
    return spark.createDataFrame(frame, schema=schema)


def preparation_pipeline(pca_components: int) -> Pipeline:
    """The stages before KMeans: assemble, standardise, project."""
    return Pipeline(
        stages=[
            VectorAssembler(inputCols=list(AUDIO_FEATURES), outputCol="features"),
            StandardScaler(inputCol="features", outputCol="scaled", withMean=True, withStd=True),
            PCA(k=pca_components, inputCol="scaled", outputCol="pca"),
        ]
    )


def export_portable(
    model: PipelineModel, version: int, silhouette: float, songs_count: int, trained_at: datetime
) -> PortableModel:
    """The fitted pipeline's numbers, enough to assign clusters without Spark."""
    scaler = next(s for s in model.stages if isinstance(s, StandardScalerModel))
    pca = next(s for s in model.stages if isinstance(s, PCAModel))
    kmeans = next(s for s in model.stages if isinstance(s, KMeansModel))
    std = scaler.std.toArray()
    return PortableModel(
        version=version,
        trained_at=trained_at,
        means=scaler.mean.toArray().tolist(),
        # Spark maps a constant feature (std 0) to 0; dividing (x - mean) = 0 by 1 does too.
        scales=np.where(std > 0, std, 1.0).tolist(),
        components=pca.pc.toArray().tolist(),
        centroids=[c.tolist() for c in kmeans.clusterCenters()],
        k=len(kmeans.clusterCenters()),
        silhouette=silhouette,
        songs=songs_count,
        explained_variance=pca.explainedVariance.toArray().tolist(),
    )


@dataclass(frozen=True)
class TrainingResult:
    """A trained model and how it was chosen."""

    model: PortableModel
    pipeline: PipelineModel
    metrics: dict[str, Any]


def fit_model(
    spark: SparkSession, catalog: pd.DataFrame, settings: Settings, version: int
) -> TrainingResult:
    """Fit the pipeline on ``catalog`` and pick k by silhouette."""
    n = len(catalog)
    if n < 3:
        raise ValueError(f"a model needs at least 3 songs, the catalog has {n}")
    data = catalog_frame(spark, catalog)
    prep = preparation_pipeline(min(settings.pca_components, len(AUDIO_FEATURES))).fit(data)
    projected = prep.transform(data).select("track_id", "pca").cache()
    try:
        sample = (
            projected.sample(fraction=settings.silhouette_sample / n, seed=settings.kmeans_seed)
            if n > settings.silhouette_sample
            else projected
        )
        evaluator = ClusteringEvaluator(
            featuresCol="pca", predictionCol="cluster", metricName="silhouette"
        )
        candidates: dict[int, tuple[float, KMeansModel]] = {}
        inertia: dict[int, float] = {}
        for k in range(settings.k_min, min(settings.k_max, n - 1) + 1):
            fitted = KMeans(
                k=k, seed=settings.kmeans_seed, featuresCol="pca", predictionCol="cluster"
            ).fit(projected)
            if len(fitted.clusterCenters()) < 2:
                continue
            score = float(evaluator.evaluate(fitted.transform(sample)))
            candidates[k] = (score, fitted)
            inertia[k] = float(fitted.summary.trainingCost)
            log.info("k scored", k=k, silhouette=round(score, 4))
        if not candidates:
            raise ValueError(f"no k in [{settings.k_min}, {settings.k_max}] fits {n} songs")
        best_k = max(candidates, key=lambda k: candidates[k][0])
        silhouette, best = candidates[best_k]
    finally:
        projected.unpersist()
    pipeline = PipelineModel(stages=[*prep.stages, best])
    portable = export_portable(pipeline, version, silhouette, n, datetime.now(UTC))
    metrics = {
        "silhouette_by_k": {str(k): s for k, (s, _) in candidates.items()},
        "inertia_by_k": {str(k): v for k, v in inertia.items()},
        "explained_variance": portable.explained_variance,
        "songs": n,
        "silhouette_sample_rows": min(n, settings.silhouette_sample),
        "chosen_k": best_k,
    }
    return TrainingResult(model=portable, pipeline=pipeline, metrics=metrics)


def train_and_publish(
    spark: SparkSession,
    engine: Engine,
    settings: Settings,
    registry: ModelRegistry,
    publisher: EventPublisher | None = None,
) -> PortableModel:
    """The whole batch layer: fit, save the PipelineModel, register (re-assigning every
    song's cluster), announce."""
    version = registry.next_version()
    result = fit_model(spark, load_catalog(engine), settings, version)
    path = Path(settings.models_dir).resolve() / f"v{version}"
    result.pipeline.write().overwrite().save(str(path))
    updated = registry.publish(result.model, result.metrics, str(path))
    model = result.model
    log.info(
        "model published",
        version=version,
        k=model.k,
        silhouette=round(model.silhouette, 4),
        songs=model.songs,
        reassigned=updated,
        path=str(path),
    )
    if publisher is not None:
        publisher.model_published(
            ModelPublished(
                version=version,
                k=model.k,
                silhouette=model.silhouette,
                songs=model.songs,
                trained_at=model.trained_at,
            )
        )
    return model


@dataclass
class ModelTrainer:
    """Runs training in a background thread, one at a time, never blocking the stream."""

    spark: Callable[[], SparkSession]
    engine: Engine
    settings: Settings
    registry: ModelRegistry
    publisher: EventPublisher | None = None
    last_error: str | None = None
    last_model: PortableModel | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def running(self) -> bool:
        """Whether a training run is under way."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, reason: str) -> Literal["started", "already-running"]:
        """Start a training run unless one is running."""
        with self._lock:
            if self.running:
                return "already-running"
            self._thread = threading.Thread(
                target=self._run, args=(reason,), name="emergify-training", daemon=True
            )
            self._thread.start()
            return "started"

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current run (if any) ends."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def should_retrain(self, song_count: int) -> bool:
        """The automatic rule: a first model once the catalog is big enough, then a new one
        whenever the catalog has grown by ``retrain_growth_fraction`` since the last."""
        if song_count < self.settings.min_songs_for_model:
            return False
        current = self.registry.summary()
        if current is None:
            return True
        return song_count >= current["songs"] * (1 + self.settings.retrain_growth_fraction)

    def maybe_start(self, song_count: int) -> bool:
        """Called after each micro-batch: start training if the rule says so."""
        if self.running or not self.should_retrain(song_count):
            return False
        return self.start(f"catalog has {song_count} songs") == "started"

    def _run(self, reason: str) -> None:
        log.info("training started", reason=reason)
        try:
            self.last_model = train_and_publish(
                self.spark(), self.engine, self.settings, self.registry, self.publisher
            )
            self.last_error = None
        except Exception as exc:  # a failed run must not take the stream down
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("training failed", reason=reason)
