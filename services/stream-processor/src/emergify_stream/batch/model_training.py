"""The batch layer: train the clustering model on the master dataset with Spark ML.

VectorAssembler(AUDIO_FEATURES) -> StandardScaler -> PCA -> KMeans, k chosen by silhouette
(:func:`fit_pipeline`); the export (:class:`~emergify_contracts.model.PortableModel`) is
registered and every song re-assigned, then ``ModelPublished`` is announced. The
:class:`ModelTrainer` runs one training at a time and never drops an update.
Design: docs/stream-processor.md, "The batch layer".
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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
from emergify_contracts.lake import songs_location
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import songs
from emergify_stream.batch.artist_profiles import (
    PROFILE_INPUT_COLUMNS,
    ProfileRows,
    compare_with_table,
    reconcile_with_table,
    spark_profiles,
    write_profiles,
)
from emergify_stream.batch.master_dataset import latest_songs
from emergify_stream.config import Settings
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.publisher import EventPublisher
from emergify_stream.scheduler_pools import BATCH_POOL, in_current_pool, scheduler_pool
from emergify_stream.speed.feature_table import song_count, table_version

log = structlog.get_logger()

Source = Literal["master-dataset", "feature-table"]
#: The song columns training and the artist profiles read (fitting uses the features).
_TRAINING_COLUMNS = PROFILE_INPUT_COLUMNS
_CATALOG_LISTS = ("artists", "artist_ids", "genres")


def load_catalog(engine: Engine) -> pd.DataFrame:
    """Every song of the feature table: :data:`_TRAINING_COLUMNS` (track id, artists, genres,
    ingestion time, the nine audio features)."""
    query = sa.select(*(songs.c[c] for c in _TRAINING_COLUMNS)).order_by(songs.c.track_id)
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(query).all(), columns=list(_TRAINING_COLUMNS))


def catalog_frame(spark: SparkSession, catalog: pd.DataFrame) -> DataFrame:
    """The catalog as a Spark DataFrame (Arrow; JDBC is not available here): track ids and
    the features, plus the artist columns when ``catalog`` has them."""
    frame = catalog.astype({f: "float64" for f in AUDIO_FEATURES})
    features = ", ".join(f"{f} double" for f in AUDIO_FEATURES)
    if not set(_TRAINING_COLUMNS) <= set(frame.columns):
        return spark.createDataFrame(
            frame[["track_id", *AUDIO_FEATURES]], "track_id string, " + features
        )
    frame = frame[list(_TRAINING_COLUMNS)].copy()
    for c in _CATALOG_LISTS:
        frame[c] = [list(v) if v is not None else [] for v in frame[c]]
    frame["ingested_at"] = pd.to_datetime(frame["ingested_at"], utc=True)
    lists = ", ".join(f"{c} array<string>" for c in _CATALOG_LISTS)
    schema = f"track_id string, {lists}, ingested_at timestamp, {features}"
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


def k_range(songs_count: int, settings: Settings) -> range:
    """The k range the silhouette search covers for a catalog of ``songs_count`` songs.

    ``k_min`` .. ``max(k_max, min(k_max_cap, round(sqrt(songs / k_growth_songs))))``: small
    catalogs search up to ``k_max``; the top then grows with the square root of the catalog
    up to ``k_max_cap`` (the README lists the defaults' ranges). Never more clusters than
    songs - 1.
    """
    grown = round(math.sqrt(songs_count / settings.k_growth_songs))
    top = max(settings.k_max, min(settings.k_max_cap, grown))
    return range(settings.k_min, min(top, songs_count - 1) + 1)


def k_candidates(ks: range, most: int) -> list[int]:
    """The k values of ``ks`` actually fitted: all of them when there are at most ``most``,
    else every ``step``-th from the bottom, plus the top (each candidate is a full KMeans
    fit, and the per-job cost of Spark dominates on a small sample)."""
    if len(ks) <= most:
        return list(ks)
    step = math.ceil((len(ks) - 1) / (most - 1))
    return sorted({*range(ks.start, ks.stop, step), ks.stop - 1})


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


@dataclass(frozen=True)
class TrainingData:
    """What the batch layer trains on: ``track_id`` and the nine features, one row per song,
    cached in Spark (``release()`` frees it)."""

    frame: DataFrame
    songs: int
    source: Source
    detail: str

    def release(self) -> None:
        """Drop the cached rows."""
        self.frame.unpersist()


def master_dataset_training_data(spark: SparkSession, settings: Settings) -> TrainingData | None:
    """The lake's latest version of each song, or None when the lake is missing or empty."""
    latest = latest_songs(spark, settings.lake_uri, _TRAINING_COLUMNS)
    if latest is None:
        return None
    frame = latest.cache()
    n = frame.count()  # reads the lake once, here, and keeps the latest versions
    if n == 0:
        frame.unpersist()
        return None
    location = songs_location(settings.lake_uri)
    return TrainingData(frame, n, "master-dataset", f"latest version per track id in {location}")


def feature_table_training_data(spark: SparkSession, engine: Engine) -> TrainingData:
    """Every song of the feature table (the fallback when the lake holds nothing)."""
    frame = catalog_frame(spark, load_catalog(engine)).cache()
    return TrainingData(frame, frame.count(), "feature-table", "every song in the feature table")


def training_data(spark: SparkSession, engine: Engine, settings: Settings) -> TrainingData:
    """The master dataset when it holds songs, else the feature table (said in ``detail``)."""
    data = master_dataset_training_data(spark, settings)
    if data is not None:
        return data
    data = feature_table_training_data(spark, engine)
    detail = (
        f"the master dataset at {songs_location(settings.lake_uri)} is missing or empty; "
        "trained on every song in the feature table"
    )
    log.warning("training on the feature table", reason=detail)
    return TrainingData(data.frame, data.songs, data.source, detail)


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(time.perf_counter() - started, 3)


def fit_pipeline(
    data: DataFrame, songs_count: int, settings: Settings, version: int
) -> TrainingResult:
    """Fit the pipeline on ``data`` (``track_id`` + the nine features; ``songs_count`` rows)
    and pick k by silhouette over :func:`k_range`.

    A catalog of at most ``silhouette_sample`` songs is fitted (every stage, every KMeans
    candidate, every silhouette) on every song; a bigger one on a uniform random sample of
    that many songs, every song then assigned by the registry (why a sample suffices: the
    design notes linked from the module docstring).
    """
    n = songs_count
    if n < 3:
        raise ValueError(f"a model needs at least 3 songs, the catalog has {n}")
    timings: dict[str, float] = {}
    sampled = n > settings.silhouette_sample
    with _timed(timings, "prepare"):
        rows = data.select(*AUDIO_FEATURES)
        if sampled:
            rows = rows.sample(fraction=settings.silhouette_sample / n, seed=settings.kmeans_seed)
        # One partition: each KMeans iteration is a Spark job whose cost is mostly fixed
        # per task, far above the work on a few thousand rows (a frame made from pandas
        # would otherwise arrive in ~100 slices).
        rows = rows.coalesce(1).cache()
        search_rows = rows.count()
        prep = preparation_pipeline(min(settings.pca_components, len(AUDIO_FEATURES))).fit(rows)
        projected = prep.transform(rows).select("pca").cache()
        projected.count()
        rows.unpersist()
    ks = k_range(n, settings)
    try:
        evaluator = ClusteringEvaluator(
            featuresCol="pca", predictionCol="cluster", metricName="silhouette"
        )
        candidates: dict[int, tuple[float, KMeansModel]] = {}
        inertia: dict[int, float] = {}

        def score(k: int) -> tuple[int, float, KMeansModel] | None:
            fitted = KMeans(
                k=k,
                seed=settings.kmeans_seed,
                maxIter=settings.kmeans_max_iter,
                featuresCol="pca",
                predictionCol="cluster",
            ).fit(projected)
            if len(fitted.clusterCenters()) < 2:
                return None
            value = float(evaluator.evaluate(fitted.transform(projected)))
            log.info("k scored", k=k, silhouette=round(value, 4), rows=search_rows)
            return k, value, fitted

        with _timed(timings, "k_search"):
            # Each KMeans iteration is a small Spark job whose cost is mostly the scheduler's
            # fixed overhead; fitting candidates side by side keeps both cores busy. Every
            # candidate has its own seed-fixed fit, so the scores do not depend on the order.
            threads = min(settings.k_search_threads, len(ks))
            with ThreadPoolExecutor(threads, thread_name_prefix="emergify-k") as pool:
                scoring = in_current_pool(data.sparkSession, score)
                for scored in pool.map(scoring, k_candidates(ks, settings.k_candidates)):
                    if scored is not None:
                        k, value, fitted = scored
                        candidates[k] = (value, fitted)
                        inertia[k] = float(fitted.summary.trainingCost)
    finally:
        projected.unpersist()
    if not candidates:
        raise ValueError(f"no k in [{ks.start}, {ks.stop - 1}] fits {n} songs")
    best_k = max(candidates, key=lambda k: candidates[k][0])
    silhouette, best = candidates[best_k]
    pipeline = PipelineModel(stages=[*prep.stages, best])
    portable = export_portable(pipeline, version, silhouette, n, datetime.now(UTC))
    metrics = {
        "silhouette_by_k": {str(k): s for k, (s, _) in candidates.items()},
        "inertia_by_k": {str(k): v for k, v in inertia.items()},
        "explained_variance": portable.explained_variance,
        "songs": n,
        "k_range": [ks.start, ks.stop - 1],
        "chosen_k": best_k,
        "fit_rows": search_rows,
        "silhouette_sample_rows": search_rows,
        "fit_timings_seconds": timings,
    }
    return TrainingResult(model=portable, pipeline=pipeline, metrics=metrics)


def fit_model(
    spark: SparkSession, catalog: pd.DataFrame, settings: Settings, version: int
) -> TrainingResult:
    """Fit the pipeline on a pandas ``catalog`` (``track_id`` + the nine features)."""
    return fit_pipeline(catalog_frame(spark, catalog), len(catalog), settings, version)


@dataclass(frozen=True)
class BatchRun:
    """One run of the batch layer: the model, its metrics and the time of each stage."""

    model: PortableModel
    metrics: dict[str, Any]
    reassigned: int
    timings: dict[str, float]


def similarity_setting(settings: Settings) -> dict[str, Any]:
    """The similarity a model version is published with (stored in its metrics; the
    recommender ranks by it, docs/similarity.md)."""
    return {
        "artist_weight": settings.similarity_artist_weight,
        "multi_artist_rule": settings.similarity_multi_artist_rule,
    }


def _timed_save(pipeline: PipelineModel, path: Path) -> float:
    started = time.perf_counter()
    pipeline.write().overwrite().save(str(path))
    return round(time.perf_counter() - started, 3)


def run_batch_layer(
    spark: SparkSession,
    engine: Engine,
    settings: Settings,
    registry: ModelRegistry,
    publisher: EventPublisher | None = None,
    data: TrainingData | None = None,
) -> BatchRun:
    """The whole batch layer: read the master dataset (or the feature table), fit, save the
    PipelineModel while registering the model (re-assigning every song's cluster), announce.

    ``data`` skips the read (the rebuild has the lake's songs cached already); it is not
    released here. Its Spark jobs run in the scheduler's batch pool, behind the speed layer's.
    """
    with scheduler_pool(spark, BATCH_POOL):
        return _run_batch_layer(spark, engine, settings, registry, publisher, data)


def _run_batch_layer(
    spark: SparkSession,
    engine: Engine,
    settings: Settings,
    registry: ModelRegistry,
    publisher: EventPublisher | None,
    data: TrainingData | None,
) -> BatchRun:
    timings: dict[str, float] = {}
    version = registry.next_version()
    own_data = data is None
    # Read before the songs are: every song of the table up to here is in the snapshot
    # (the lake is written before the broker); later ones are reconciled at publish.
    with engine.connect() as conn:
        since = table_version(conn)
    with _timed(timings, "read"):
        if data is None:
            data = training_data(spark, engine, settings)
    try:
        with _timed(timings, "fit"):
            result = fit_pipeline(data.frame, data.songs, settings, version)
        profiles = None
        if settings.artist_profiles and set(PROFILE_INPUT_COLUMNS) <= set(data.frame.columns):
            with _timed(timings, "profiles"):
                profiles = ProfileRows.from_frame(spark_profiles(spark, data.frame, result.model))
        elif settings.artist_profiles:
            log.warning("training songs lack the artist columns: no artist profiles")
        published = _publish(settings, registry, result, data, profiles, since, dict(timings))
    finally:
        if own_data:
            data.release()
    updated, path, artists = published
    timings.update(updated[1])
    model = result.model
    metrics = {
        **result.metrics,
        "source": data.source,
        "source_detail": data.detail,
        "timings_seconds": dict(timings),
        "artists": artists,
        "similarity": similarity_setting(settings),
    }
    with _timed(timings, "announce"):
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
    log.info(
        "model published",
        version=version,
        k=model.k,
        silhouette=round(model.silhouette, 4),
        songs=model.songs,
        artists=artists,
        source=data.source,
        reassigned=updated[0],
        path=str(path),
        timings=timings,
    )
    return BatchRun(model=model, metrics=metrics, reassigned=updated[0], timings=timings)


def _publish(
    settings: Settings,
    registry: ModelRegistry,
    result: TrainingResult,
    data: TrainingData,
    profiles: ProfileRows | None,
    since: int,
    timings_so_far: dict[str, float],
) -> tuple[tuple[int, dict[str, float]], Path, int | None]:
    """Register the model: save the Spark model, re-assign every song and write the artist
    profiles, all committed together. Returns ((songs re-assigned, timings), path, artists)."""
    timings: dict[str, float] = {}
    version = result.model.version
    artists: list[int] = []

    # The comparison with the table (every recent song) runs before the transaction, so
    # the speed layer's micro-batches do not wait on it; inside, only the songs the table
    # changed since are swapped (reconcile_with_table says why that is exact).
    compared = None
    if profiles is not None:
        with _timed(timings, "profiles_compare"), registry.engine.connect() as conn:
            compared = compare_with_table(conn, profiles, data.frame, result.model, since)

    def write(conn: Any) -> None:
        if profiles is None:
            return
        with _timed(timings, "profiles_write"):
            reconcile_with_table(conn, profiles, data.frame, result.model, since, compared)
            artists.append(write_profiles(conn, profiles, version, table_version(conn)))

    path = Path(settings.models_dir).resolve() / f"v{version}"
    metrics = {
        **result.metrics,
        "source": data.source,
        "source_detail": data.detail,
        "timings_seconds": timings_so_far,
        "similarity": similarity_setting(settings),
    }
    # Spark saves the PipelineModel (JVM) while Python re-assigns the clusters (SQLite): the
    # two overlap on two cores, and the registry commits only once the save has succeeded.
    with ThreadPoolExecutor(1, thread_name_prefix="emergify-save") as pool:
        save = in_current_pool(data.frame.sparkSession, _timed_save)
        saving = pool.submit(save, result.pipeline, path)
        with _timed(timings, "reassign"):
            updated = registry.publish(
                result.model,
                metrics,
                str(path),
                before_commit=lambda: saving.result(),
                in_transaction=write,
            )
        timings["save"] = saving.result()
    return (updated, timings), path, artists[0] if artists else None


def train_and_publish(
    spark: SparkSession,
    engine: Engine,
    settings: Settings,
    registry: ModelRegistry,
    publisher: EventPublisher | None = None,
) -> PortableModel:
    """:func:`run_batch_layer`, returning the new current model."""
    return run_batch_layer(spark, engine, settings, registry, publisher).model


RetrainOutcome = Literal["started", "queued"]


@dataclass
class ModelTrainer:
    """Runs training in a background thread, one run at a time, never blocking the stream,
    and never missing an update: a request during a run is queued, and when a run ends a
    follow-up starts if one was queued or if the songs that arrived during it meet the
    growth rule (:meth:`should_retrain`)."""

    spark: Callable[[], SparkSession]
    engine: Engine
    settings: Settings
    registry: ModelRegistry
    publisher: EventPublisher | None = None
    last_error: str | None = None
    last_model: PortableModel | None = None
    last_run: BatchRun | None = None
    runs: int = 0
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _busy: bool = field(default=False, repr=False)
    _queued: str | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """Whether a training run is under way (or about to follow one)."""
        return self._busy

    @property
    def queued(self) -> bool:
        """Whether a request waits for the current run to end."""
        return self._queued is not None

    def start(self, reason: str) -> RetrainOutcome:
        """Start a training run now, or queue one for when the current run ends."""
        # Counted before the run starts, so songs that arrive during it are seen as growth.
        before = None if self._busy else self._song_count()
        with self._lock:
            if self._busy:
                self._queued = self._queued or reason
                return "queued"
            self._busy = True
            self._thread = threading.Thread(
                target=self._loop, args=(reason, before), name="emergify-training", daemon=True
            )
            self._thread.start()
            return "started"

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current run and its follow-ups (if any) end."""
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
        """Called after each micro-batch: start training if the rule says so. During a run
        nothing is queued here: the run's end checks the rule again."""
        if self.running or not self.should_retrain(song_count):
            return False
        return self.start(f"catalog has {song_count} songs") == "started"

    def _song_count(self) -> int | None:
        try:
            with self.engine.connect() as conn:
                return song_count(conn)
        except Exception as exc:  # the follow-up check must not kill the trainer thread
            log.warning("could not count the songs for the retrain rule", error=str(exc))
            return None

    def _loop(self, reason: str | None, before: int | None) -> None:
        while reason is not None:
            succeeded = self._run(reason)
            reason, before = self._follow_up(before, succeeded)

    def _follow_up(self, before: int | None, succeeded: bool) -> tuple[str | None, int | None]:
        """Why the next run starts right away (None: the trainer is now idle), and the song
        count it starts with."""
        after = self._song_count()
        # Only songs that arrived during the run count: a catalog the lake does not fully
        # cover must not make every run start another.
        arrived = after is not None and before is not None and after > before
        grown = None
        if succeeded and self.settings.auto_retrain and arrived:
            grown = after if self.should_retrain(after) else None  # type: ignore[arg-type]
        with self._lock:
            queued, self._queued = self._queued, None
            if queued is not None:
                return f"{queued} (queued during the previous run)", after
            if grown is not None:
                return f"catalog grew to {grown} songs during the previous run", after
            self._busy = False
            return None, None

    def _run(self, reason: str) -> bool:
        log.info("training started", reason=reason)
        try:
            run = run_batch_layer(
                self.spark(), self.engine, self.settings, self.registry, self.publisher
            )
            self.last_run, self.last_model = run, run.model
            self.last_error = None
            return True
        except Exception as exc:  # a failed run must not take the stream down
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("training failed", reason=reason)
            return False
        finally:
            self.runs += 1


class RetrainSchedule:
    """The third trigger of the batch layer, besides catalog growth and ``POST /retrain``:
    a training run every ``interval`` seconds.

    A tick while a run is under way is skipped rather than queued (the next tick comes soon
    enough), and so is a tick while ``ready()`` is false (Spark starting, catalog too small).
    """

    def __init__(self, trainer: ModelTrainer, interval: float, ready: Callable[[], bool]) -> None:
        self.trainer = trainer
        self.interval = interval
        self.ready = ready
        self.ticks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start ticking (in a daemon thread); nothing happens if ``interval`` is 0."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="emergify-retrain", daemon=True)
        self._thread.start()
        log.info("scheduled retraining on", every_seconds=self.interval)

    def stop(self) -> None:
        """Stop ticking (a run already started goes on; the trainer owns it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.ticks += 1
            try:
                if not self.ready():
                    log.info("scheduled retrain skipped: not ready")
                    continue
                if self.trainer.running:
                    log.info("scheduled retrain skipped: a run is under way")
                    continue
                self.trainer.start(f"scheduled (every {self.interval:g} s)")
            except Exception:  # the next tick tries again
                log.exception("scheduled retrain failed to start")
