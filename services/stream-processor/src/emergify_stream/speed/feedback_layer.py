"""The speed layer's listener query: feedback topic -> parse -> clean (Spark SQL) -> listener
tables, exactly once, then a listener-change event so the serving layer reloads those listeners.

A second streaming query beside the songs one, on the same SparkSession, with its own
checkpoint; the sink is :class:`~emergify_stream.speed.feedback_sink.FeedbackSink`.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import structlog
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from emergify_contracts.listener import (
    LISTENER_ID_RE,
    LISTENER_SIGNALS,
    FeedbackSignal,
    ListenerChange,
)
from emergify_contracts.song import TRACK_ID_RE
from emergify_stream.batch.master_dataset import read_feedback
from emergify_stream.config import Settings
from emergify_stream.publisher import EventPublisher
from emergify_stream.scheduler_pools import SPEED_POOL, scheduler_pool
from emergify_stream.speed.feedback_sink import FEEDBACK_COLUMNS, FeedbackBatchResult, FeedbackSink
from emergify_stream.speed.speed_layer import WatchedQuery, dead_letters

log = structlog.get_logger()

#: Explicit schema of a :class:`~emergify_contracts.listener.FeedbackEvent` value.
FEEDBACK_EVENT_SCHEMA = (
    "schema_version int, event_id string, listener_id string, track_id string, signal string, "
    "at string"
)

_SIGNALS = ", ".join(f"'{s.value}'" for s in (*LISTENER_SIGNALS, FeedbackSignal.ERASE))
#: Every rule of FeedbackEvent, each with the reason a refused record carries.
FEEDBACK_CHECKS: tuple[str, ...] = (
    "CASE WHEN NOT coalesce(e.event_id, '') RLIKE '^[0-9a-f]{32}$' "
    "THEN 'event_id must be 32 hex digits' END",
    f"CASE WHEN NOT coalesce(e.listener_id, '') RLIKE '{LISTENER_ID_RE.pattern}' "
    "THEN 'listener_id is missing or malformed' END",
    f"CASE WHEN e.signal IS NULL OR e.signal NOT IN ({_SIGNALS}) "
    "THEN concat('signal ''', coalesce(e.signal, ''), ''' is not a feedback signal') END",
    "CASE WHEN e.signal = 'erase' AND e.track_id IS NOT NULL THEN 'erase carries no track_id' "
    f"WHEN e.signal <> 'erase' AND NOT coalesce(e.track_id, '') RLIKE '{TRACK_ID_RE.pattern}' "
    "THEN 'track_id is missing or not a 22-character base62 Spotify id' END",
    "CASE WHEN try_cast(e.at AS TIMESTAMP) IS NULL "
    "THEN concat('at ''', coalesce(e.at, ''), ''' is not an ISO 8601 timestamp') END",
)

FEEDBACK_CLEAN_SQL = f"""
SELECT
  e.event_id,
  e.listener_id,
  e.track_id,
  e.signal,
  try_cast(e.at AS TIMESTAMP) AS at,
  partition AS kafka_partition,
  offset AS kafka_offset,
  topic,
  CAST(key AS STRING) AS record_key,
  CAST(value AS STRING) AS record_value,
  CASE
    WHEN value IS NULL THEN 'the record has no value'
    -- from_json gives a struct of nulls, not a null, for text that is not a JSON object.
    WHEN e IS NULL OR coalesce(e.event_id, e.listener_id, e.signal, e.track_id, e.at) IS NULL
      THEN 'the value is not a FeedbackEvent: malformed JSON'
    ELSE nullif(concat_ws('; ', {", ".join(FEEDBACK_CHECKS)}), '')
  END AS reject_reason
FROM feedback_records
"""


def clean_feedback(records: DataFrame) -> DataFrame:
    """Raw Kafka records (the source's columns) cleaned by :data:`FEEDBACK_CLEAN_SQL`."""
    parsed = records.withColumn(
        "e", F.from_json(F.col("value").cast("string"), FEEDBACK_EVENT_SCHEMA)
    )
    parsed.createOrReplaceTempView("feedback_records")
    return records.sparkSession.sql(FEEDBACK_CLEAN_SQL)


class FeedbackLayer:
    """Runs the feedback query and feeds its micro-batches to the sink."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        sink: FeedbackSink,
        publisher: EventPublisher | None,
    ) -> None:
        self.spark = spark
        self.settings = settings
        self.sink = sink
        self.publisher = publisher
        self.query: StreamingQuery | None = None
        self.last_result: FeedbackBatchResult | None = None
        self._query_name: str | None = None
        self._stopped = False

    def start(self) -> StreamingQuery:
        """Start the query from its checkpoint (or ``startingOffsets``)."""
        options = {
            "kafka.bootstrap.servers": self.settings.kafka_bootstrap_servers,
            "subscribe": self.settings.feedback_topic,
            "startingOffsets": "earliest",
            "maxOffsetsPerTrigger": str(self.settings.max_offsets_per_trigger),
            "failOnDataLoss": str(self.settings.fail_on_data_loss).lower(),
        }
        raw = self.spark.readStream.format(self.settings.spark_kafka_format).options(**options)
        interval_ms = max(1, round(self.settings.trigger_interval_seconds * 1000))
        writer = (
            clean_feedback(raw.load())
            .writeStream.foreachBatch(self.process_batch)
            .option("checkpointLocation", self.settings.feedback_checkpoint)
            .trigger(processingTime=f"{interval_ms} milliseconds")
        )
        with scheduler_pool(self.spark, SPEED_POOL):  # the query's thread keeps the pool
            self.query = writer.start()
        log.info("feedback query started", query_id=str(self.query.id))
        return self.query

    def query_name(self) -> str:
        """Names this checkpoint's batches in ``listener_batches`` (see SpeedLayer.query_name)."""
        if self._query_name is None:
            metadata = Path(self.settings.feedback_checkpoint) / "metadata"
            if metadata.is_file():
                query_id = json.loads(metadata.read_text().splitlines()[0])["id"]
            else:
                assert self.query is not None
                query_id = str(self.query.id)
            self._query_name = f"feedback-{query_id}"
        return self._query_name

    def process_batch(self, batch: DataFrame, batch_id: int) -> FeedbackBatchResult:
        """``foreachBatch``: DLQ the refused records, apply the rest, announce the change."""
        rows = batch.toPandas()  # timestamps come as naive UTC (the session's time zone)
        refused = rows["reject_reason"].notna()
        if refused.any() and self.publisher is not None:
            self.publisher.dead_letters(dead_letters(rows[refused]))
        events = rows[~refused][list(FEEDBACK_COLUMNS)].to_dict("records")
        result = self.sink.write(self.query_name(), batch_id, events)
        if result.listener_ids and self.publisher is not None:
            self.publisher.listener_change(
                ListenerChange(version=result.version, listener_ids=list(result.listener_ids))
            )
        self.last_result = result
        return result

    def reconcile(self) -> FeedbackBatchResult | None:
        """Restore the master dataset's feedback events the listener tables lack (the broker
        lost records), and announce the listeners it changed; None when the lake holds no
        feedback. Safe while the query runs: events are keyed by id, written once."""
        started = time.perf_counter()
        frame = read_feedback(self.spark, self.settings.lake_uri)
        if frame is None:
            return None
        events = frame.toPandas().to_dict("records")
        result = self.sink.reconcile(f"reconcile-feedback-{uuid.uuid4()}", events)
        if result.listener_ids and self.publisher is not None:
            self.publisher.listener_change(
                ListenerChange(version=result.version, listener_ids=list(result.listener_ids))
            )
        log.info(
            "listener feedback reconciled with the master dataset",
            events=len(events),
            listeners_changed=len(result.listener_ids),
            seconds=round(time.perf_counter() - started, 2),
        )
        return result

    def ensure_running(self) -> bool:
        """Start the query again from its checkpoint if it died (a broker that went away
        mid-batch, a Python worker that failed to connect back under load); True when it
        had to."""
        query = self.query
        if query is None or query.isActive or self._stopped:
            return False
        log.warning("the feedback query stopped; starting it again", error=str(query.exception()))
        self.start()
        return True

    def watched(self) -> WatchedQuery:
        """This query as the broker watch sees it: a reset of the feedback topic is noticed
        and the listener tables reconciled with the master dataset."""
        return WatchedQuery(
            "feedback",
            self.settings.feedback_topic,
            lambda: self.query,
            self.ensure_running,
            self.reconcile,
        )

    def stop(self) -> None:
        """Stop the query (a micro-batch in flight re-runs from the checkpoint next time)."""
        self._stopped = True
        if self.query is not None and self.query.isActive:
            self.query.stop()
