"""The stream processor's moving parts in one process: SparkSession, speed layer, trainer.

The only module that wires the two layers: the speed layer gets the batch layer's
``reconcile`` as a callable. The batch layer has three triggers: catalog growth (after a
micro-batch, and when a run ends), a schedule (``retrain_interval_seconds``, off by default)
and ``POST /admin/retrain``. The admin app owns one :class:`StreamRuntime`: its lifespan
starts it (Spark in a background thread, so ``/health`` says "starting" meanwhile) and stops
it on shutdown.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from pyspark.sql import SparkSession

from emergify_contracts.tables import create_tables, make_engine
from emergify_contracts.topics import ensure_topics_sync
from emergify_stream.batch.model_training import ModelTrainer, RetrainSchedule
from emergify_stream.batch.rebuild import reconcile
from emergify_stream.config import Settings
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.publisher import EventPublisher
from emergify_stream.spark import build_spark_session
from emergify_stream.speed.feature_table import (
    BatchResult,
    FeatureTableSink,
    RetryPolicy,
    song_count,
    table_version,
)
from emergify_stream.speed.feedback_layer import FeedbackLayer
from emergify_stream.speed.feedback_sink import FeedbackSink
from emergify_stream.speed.kafka_source import KafkaOptions, end_offsets
from emergify_stream.speed.speed_layer import SpeedLayer, source_options

log = structlog.get_logger()

State = Literal["starting", "ok", "degraded", "stopped"]


def ensure_topics(settings: Settings) -> None:
    """Create the four topics if missing (the embedded broker starts empty)."""
    ensure_topics_sync(
        settings.kafka_bootstrap_servers,
        settings.topics(),
        settings.topic_partitions,
        client_id="emergify-stream-admin",
    )


def committed_offsets(progress: dict[str, Any] | None) -> dict[str, dict[str, int]] | None:
    """The source offsets the last micro-batch ended at, from a query progress report."""
    if not progress or not progress.get("sources"):
        return None
    end = progress["sources"][0].get("endOffset")
    if isinstance(end, str):
        end = json.loads(end)
    return end or None


class StreamRuntime:
    """Spark, the streaming query, the sink and the trainer, with their state."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        create_tables(self.engine)
        self.registry = ModelRegistry(self.engine)
        self.publisher = EventPublisher(
            settings.kafka_bootstrap_servers,
            settings.songs_dlq_topic,
            settings.catalog_changes_topic,
            settings.models_topic,
            settings.listener_changes_topic,
        )
        self._stopping = threading.Event()
        # (monotonic time measured, lag): status calls within lag_cache_seconds share one
        # broker round trip; the lock makes concurrent callers wait for it, not repeat it.
        self._lag_cache: tuple[float, dict[str, Any] | None] | None = None
        self._lag_lock = threading.Lock()
        self.sink = FeatureTableSink(
            self.engine,
            self.registry,
            self.publisher,
            self._after_batch,
            retry=RetryPolicy(give_up_after_seconds=settings.database_retry_seconds),
            stopping=self._stopping,
        )
        self.trainer = ModelTrainer(
            self._spark_session, self.engine, settings, self.registry, self.publisher
        )
        self.schedule = RetrainSchedule(
            self.trainer, settings.retrain_interval_seconds, self._ready_to_train
        )
        self.spark: SparkSession | None = None
        self.layer: SpeedLayer | None = None
        self.feedback: FeedbackLayer | None = None
        self.error: str | None = None
        self.last_batch_at: datetime | None = None
        self._thread: threading.Thread | None = None

    def _ready_to_train(self) -> bool:
        """A scheduled run needs Spark and a catalog of ``min_songs_for_model`` songs."""
        if self.spark is None or self._stopping.is_set():
            return False
        with self.engine.connect() as conn:
            return song_count(conn) >= self.settings.min_songs_for_model

    def _spark_session(self) -> SparkSession:
        if self.spark is None:
            raise RuntimeError("the Spark session is not started yet")
        return self.spark

    def start_background(self) -> None:
        """Start Spark and the query in a background thread."""
        self._thread = threading.Thread(
            target=self._start, name="emergify-stream-start", daemon=True
        )
        self._thread.start()

    def _start(self) -> None:
        try:
            if self.settings.ensure_topics:
                try:
                    ensure_topics(self.settings)
                except Exception as exc:  # the query still starts; new partitions are picked up
                    log.warning("could not create the topics", error=str(exc))
            self.spark = build_spark_session(
                self.settings.spark_master,
                "emergify-stream-processor",
                **self.settings.spark_conf(),
            )
            if self._stopping.is_set():
                return
            self.layer = SpeedLayer(
                self.spark,
                self.settings,
                self.sink,
                lambda: ensure_topics(self.settings),
                reconcile,
            )
            self.layer.start()
            self.feedback = FeedbackLayer(
                self.spark, self.settings, FeedbackSink(self.engine), self.publisher
            )
            self.feedback.start()
            self.layer.watch.add(self.feedback.watched())
            self.schedule.start()
            if self.settings.auto_retrain:
                # A restarted processor may find a catalog that already needs a model.
                with self.engine.connect() as conn:
                    self.trainer.maybe_start(song_count(conn))
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the stream processor could not start")

    def _after_batch(self, result: BatchResult) -> None:
        self.last_batch_at = datetime.now(UTC)
        if self.settings.auto_retrain and result.applied:
            self.trainer.maybe_start(result.songs)

    def state(self) -> tuple[State, str | None]:
        """``ok`` once the query runs; ``starting`` before; ``degraded`` with the error if the
        start failed, the query died, or a micro-batch is waiting for the database."""
        if self._stopping.is_set():
            return "stopped", None
        if self.error:
            return "degraded", self.error
        query = self.layer.query if self.layer else None
        if query is None:
            return "starting", None
        if not query.isActive:
            exc = query.exception()
            return "degraded", f"the streaming query stopped: {exc}" if exc else "the query stopped"
        if waiting := self.sink.waiting_for_database:
            return "degraded", f"the database is unreachable; the micro-batch retries: {waiting}"
        return "ok", None

    def lag(self) -> dict[str, Any] | None:
        """Records on the songs topic not yet in a committed micro-batch, per topic; a value
        measured less than ``lag_cache_seconds`` ago is reused."""
        ttl = self.settings.lag_cache_seconds
        with self._lag_lock:
            cached = self._lag_cache
            if cached is not None and time.monotonic() - cached[0] < ttl:
                return cached[1]
            lag = self._measure_lag()
            self._lag_cache = (time.monotonic(), lag)
            return lag

    def _measure_lag(self) -> dict[str, Any] | None:
        query = self.layer.query if self.layer else None
        committed = committed_offsets(query.lastProgress if query else None)
        if committed is None:
            return None
        latest = end_offsets(KafkaOptions.parse(source_options(self.settings)))
        topics = {
            topic: sum(max(0, end - committed.get(topic, {}).get(p, 0)) for p, end in parts.items())
            for topic, parts in latest.items()
        }
        return {"topics": topics, "total": sum(topics.values())}

    def status(self) -> dict[str, Any]:
        """What ``GET /admin/status`` reports."""
        query = self.layer.query if self.layer else None
        progress = query.lastProgress if query else None
        with self.engine.connect() as conn:
            version, count = table_version(conn), song_count(conn)
        last = self.sink.last_result
        try:
            lag = self.lag()
        except Exception as exc:  # the broker may be away; the rest of the status still helps
            log.warning("could not measure the lag", error=str(exc))
            lag = None
        return {
            "query_id": str(query.id) if query else None,
            "last_batch_id": last.batch_id if last else (progress or {}).get("batchId"),
            "table_version": version,
            "songs": count,
            "lag": lag,
            "last_batch_at": self.last_batch_at,
            "model": self.registry.summary(),
            "training": self.trainer.running,
            "training_queued": self.trainer.queued,
            "training_error": self.trainer.last_error,
        }

    def stop(self) -> None:
        """Stop the query, then Spark; a micro-batch in flight is abandoned uncommitted and
        re-runs from the checkpoint next time."""
        self._stopping.set()
        self.schedule.stop()
        if self._thread is not None:
            self._thread.join(120)
        for layer in (self.feedback, self.layer):
            if layer is None:
                continue
            try:
                layer.stop()
            except Exception:
                log.exception("stopping a streaming query failed")
        if self.spark is not None:
            self.spark.stop()
        self.publisher.close()
        self.engine.dispose()
        log.info("stream processor stopped")
