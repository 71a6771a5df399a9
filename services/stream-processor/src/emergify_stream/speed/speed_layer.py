"""The speed layer: songs topic -> parse -> clean (Spark SQL) -> feature table.

``readStream`` on the songs topic (``settings.spark_kafka_format``: our Python source or
Spark's JVM one), ``from_json`` with the explicit schema of :class:`SongEvent`, then a temp
view cleaned by :data:`CLEAN_SQL`: names trimmed, every Song rule checked, each refused
record given a readable reason. Each micro-batch is read from Kafka once (one Spark job, no
shuffle), then split: refused records go to the
DLQ and the latest version per track id (:func:`latest_versions`) to the
:class:`~emergify_stream.speed.feature_table.FeatureTableSink`.

The layer looks after itself and the process's other queries (:class:`BrokerWatch`): a query
that died (the broker went away mid-batch) is started again from its checkpoint, and when the
broker lost records (the embedded broker forgets everything when it restarts) the feature
table is reconciled with the master dataset by the ``reconcile`` callable it is given (the
stream processor passes :func:`emergify_stream.batch.rebuild.reconcile`: the speed layer does
not import the batch layer), the listener tables by the feedback query's own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import structlog
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from emergify_contracts.events import DeadLetter
from emergify_contracts.song_rules import sql_checks, sql_clean_projection, sql_list_cleaning
from emergify_contracts.song_schemas import spark_event_ddl
from emergify_contracts.versions import STREAM_POSITION, sort_columns
from emergify_stream.config import Settings
from emergify_stream.scheduler_pools import SPEED_POOL, scheduler_pool
from emergify_stream.speed.feature_table import BATCH_COLUMNS, BatchResult, FeatureTableSink
from emergify_stream.speed.kafka_source import KafkaOptions, WatermarkProbe, end_offsets

log = structlog.get_logger()

#: Explicit schema of a :class:`~emergify_contracts.events.SongEvent` value, derived from the
#: song's field table. ``ingested_at`` stays text here and is converted with ``try_cast`` in
#: SQL, so a bad timestamp becomes a readable reason rather than a failed query.
SONG_EVENT_SCHEMA = spark_event_ddl()

#: Every Song rule as Spark SQL (generated from the field table: the same rules and messages
#: as the ingest service's pydantic validators), then the envelope's own.
_SONG_CHECKS = [
    *sql_checks("s"),
    "CASE WHEN coalesce(upload_id, '') = '' THEN 'upload_id is required' END",
    "CASE WHEN coalesce(source, '') = '' THEN 'source is required' END",
    "CASE WHEN event.ingested_at IS NOT NULL AND try_cast(event.ingested_at AS TIMESTAMP) IS NULL "
    "THEN concat('ingested_at ''', event.ingested_at, ''' is not an ISO 8601 timestamp') END",
]
_LIST_CLEANING = ",\n    ".join(sql_list_cleaning("event.song"))
_PROJECTION = ",\n  ".join(sql_clean_projection("s"))

#: Cleans the parsed records of the ``song_events`` view: one row per record, with
#: ``reject_reason`` null for a usable song.
CLEAN_SQL = f"""
WITH parsed AS (
  SELECT
    topic,
    partition AS kafka_partition,
    offset AS kafka_offset,
    timestamp AS record_timestamp,
    CAST(key AS STRING) AS record_key,
    CAST(value AS STRING) AS record_value,
    event,
    event.song AS s,
    trim(event.upload_id) AS upload_id,
    trim(event.source) AS source,
    {_LIST_CLEANING}
  FROM song_events
)
SELECT
  {_PROJECTION},
  upload_id,
  source,
  kafka_partition,
  -- SongEvent defaults ingested_at to "now"; the record's own timestamp is the closest.
  coalesce(try_cast(event.ingested_at AS TIMESTAMP), record_timestamp) AS ingested_at,
  kafka_offset,
  topic,
  record_key,
  record_value,
  CASE
    WHEN record_value IS NULL THEN 'the record has no value'
    WHEN s IS NULL THEN 'the value is not a SongEvent: malformed JSON or no "song" object'
    ELSE nullif(concat_ws('; ', {", ".join(_SONG_CHECKS)}), '')
  END AS reject_reason
FROM parsed
"""

#: What a micro-batch hands to the driver: the sink's columns, and for refused records the
#: reason and the raw record (the value only for those, to keep the batch small).
BATCH_SELECT = (
    *BATCH_COLUMNS,
    "reject_reason",
    "topic",
    "record_key",
    "CASE WHEN reject_reason IS NOT NULL THEN record_value END AS record_value",
)


def latest_versions(accepted: pd.DataFrame) -> pd.DataFrame:
    """The latest version of each track id in a micro-batch (the rule of
    :mod:`emergify_contracts.versions`), :data:`BATCH_COLUMNS` only."""
    ordered = accepted.sort_values(
        sort_columns(STREAM_POSITION), kind="stable", na_position="first"
    )
    return ordered.drop_duplicates("track_id", keep="last")[list(BATCH_COLUMNS)]


def source_options(settings: Settings) -> dict[str, str]:
    """Options understood alike by ``emergify_kafka`` and Spark's ``kafka`` format."""
    return {
        "kafka.bootstrap.servers": settings.kafka_bootstrap_servers,
        "subscribe": settings.songs_topic,
        "startingOffsets": settings.starting_offsets,
        "maxOffsetsPerTrigger": str(settings.max_offsets_per_trigger),
        "failOnDataLoss": str(settings.fail_on_data_loss).lower(),
    }


def clean_song_stream(spark: SparkSession, settings: Settings) -> DataFrame:
    """The streaming DataFrame of cleaned records (see :data:`CLEAN_SQL`)."""
    raw = (
        spark.readStream.format(settings.spark_kafka_format)
        .options(**source_options(settings))
        .load()
    )
    return clean_records(spark, raw)


def clean_records(spark: SparkSession, raw: DataFrame) -> DataFrame:
    """Kafka records (``key, value, topic, partition, offset, timestamp``; streaming or not)
    parsed with :data:`SONG_EVENT_SCHEMA` and cleaned by :data:`CLEAN_SQL`."""
    parsed = raw.withColumn("event", F.from_json(F.col("value").cast("string"), SONG_EVENT_SCHEMA))
    parsed.createOrReplaceTempView("song_events")
    return spark.sql(CLEAN_SQL)


def progress_end_offsets(query: StreamingQuery | None) -> dict[str, dict[str, int]]:
    """Where ``query``'s last reported micro-batch ended, per topic and partition (``{}``
    before its first)."""
    progress = query.lastProgress if query is not None else None
    if not progress or not progress.get("sources"):
        return {}
    end = progress["sources"][0].get("endOffset")
    if isinstance(end, str):
        end = json.loads(end)
    return {t: {p: int(o) for p, o in parts.items()} for t, parts in (end or {}).items()}


def dead_letters(refused: pd.DataFrame) -> list[DeadLetter]:
    """The refused records of a micro-batch frame (:data:`BATCH_SELECT`), with reasons."""
    return [
        DeadLetter(
            reason=r["reject_reason"],
            topic=r["topic"],
            partition=int(r["kafka_partition"]),
            offset=int(r["kafka_offset"]),
            key=r["record_key"],
            value=r["record_value"],
        )
        for r in refused.to_dict("records")
    ]


#: How long the broker watch's reconcile waits for a restarted query's first trigger.
_FIRST_TRIGGER_WAIT_S = 60.0


@dataclass(frozen=True)
class WatchedQuery:
    """A streaming query the :class:`BrokerWatch` looks after."""

    name: str
    topic: str  # the topic it reads
    #: The query's current run (None before it started).
    query: Callable[[], StreamingQuery | None]
    #: Starts the query again from its checkpoint if it died; True when it had to.
    ensure_running: Callable[[], bool]
    #: Restores from the master dataset what the broker lost of this query's records.
    reconcile: Callable[[], object]


class BrokerWatch:
    """Watches the topics of the process's streaming queries (the songs query, the listener
    feedback query: :meth:`add`), in a thread of its own.

    Every ``broker_watch_interval_seconds``: a query that died is started again from its
    checkpoint; the log end and the id of every watched topic are probed. A probe that fails
    (broker away), a missing topic (created again through ``ensure_topics``), a topic created
    again since the last round (a new topic id: its new log may already be longer than the
    old) or a log end below a query's last committed offset (the log was reset) means
    records may be lost, so once the broker answers again every query's store is reconciled
    with the master dataset (as it is after a query had to be started again, once that query
    finished its first trigger). Each query's source re-bases its checkpoint onto the new log
    by itself (:meth:`~emergify_stream.speed.kafka_source.KafkaStreamReader.latestOffset`),
    so records written after the reset flow through the topic.
    """

    def __init__(self, layer: SpeedLayer, ensure_topics: Callable[[], None] | None) -> None:
        self.layer = layer
        self.ensure_topics = ensure_topics
        settings = layer.settings
        self.interval = settings.broker_watch_interval_seconds
        self.queries: list[WatchedQuery] = [
            WatchedQuery(
                "songs",
                settings.songs_topic,
                lambda: layer.query,
                layer.ensure_running,
                self._reconcile_songs,
            )
        ]
        self.probe = self._new_probe()
        self.reconcile_needed = False
        self.reconciled = 0  # songs upserted from the master dataset, since start
        #: Queries started again, by name, with when: the reconcile waits for their first
        #: trigger (see :meth:`check`).
        self._restarted: dict[str, float] = {}
        self._topic_ids: dict[str, str] = {}  # the last id seen of each watched topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emergify-broker-watch", daemon=True)

    def add(self, query: WatchedQuery) -> None:
        """Watch another query (safe while the watch runs: the next round probes its topic)."""
        self.queries = [*self.queries, query]

    def _new_probe(self) -> WatermarkProbe:
        opts = KafkaOptions.parse(
            {
                **source_options(self.layer.settings),
                "subscribe": ",".join(dict.fromkeys(q.topic for q in self.queries)),
            }
        )
        return WatermarkProbe(opts, metadata_max_age_ms=1_000)

    def _reconcile_songs(self) -> int:
        n = self.layer.reconcile()
        self.reconciled += n
        return n

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the watch thread runs."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop watching (a reconciliation in flight finishes first)."""
        self._stop.set()
        self._thread.join(120)
        self.probe.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let the watch die; the next round tries again
                log.exception("broker watch round failed")

    def check(self) -> None:
        """One round: restart dead queries, probe the topics, reconcile when needed."""
        queries = self.queries
        for query in queries:
            if self._stop.is_set():
                return
            if query.ensure_running():
                self.reconcile_needed = True
                self._restarted[query.name] = time.monotonic()
        topics = [q.topic for q in queries]
        if set(self.probe.opts.topics) != set(topics):  # a query was added
            self.probe.close()
            self.probe = self._new_probe()
        try:
            ends = self.probe.end_offsets()
        except Exception as exc:
            if not self.reconcile_needed:
                log.warning(
                    "the broker does not answer; will reconcile when it is back", error=repr(exc)
                )
            self.reconcile_needed = True
            return
        missing = sorted({t for t in topics if t not in ends})
        if missing:
            log.warning("topics are missing (broker restarted?); creating them", topics=missing)
            self.reconcile_needed = True
            if self.ensure_topics is not None:
                self.ensure_topics()
            return
        ids = self.probe.topic_ids
        recreated = sorted(t for t, i in ids.items() if self._topic_ids.get(t, i) != i)
        self._topic_ids.update(ids)
        if recreated:
            log.warning("topics were created again (broker restarted?)", topics=recreated)
            self.reconcile_needed = True
        for query in queries:
            reset = self._reset_partitions(query, ends[query.topic])
            if reset:
                log.warning(
                    "a topic was reset below a query's checkpoint",
                    query=query.name,
                    topic=query.topic,
                    partitions=reset,
                )
                self.reconcile_needed = True
        if self.reconcile_needed and not self._waiting_for_first_trigger(queries):
            for query in queries:
                query.reconcile()
            self.reconcile_needed = False
            self._restarted.clear()

    def _waiting_for_first_trigger(self, queries: list[WatchedQuery]) -> bool:
        """Whether a query started again has yet to finish its first trigger (at most
        ``_FIRST_TRIGGER_WAIT_S``). A new run of a source has not seen the old log: if the new
        one had already grown past the checkpoint, that trigger starts there, so the records
        below it come from the master dataset only, and the reconcile must follow it."""
        now = time.monotonic()
        for query in queries:
            since = self._restarted.get(query.name)
            if since is None:
                continue
            run = query.query()
            if run is not None and run.lastProgress is None and now - since < _FIRST_TRIGGER_WAIT_S:
                return True
        return False

    def _reset_partitions(self, query: WatchedQuery, ends: dict[str, int]) -> list[str]:
        """The partitions of ``query``'s topic whose log ends below its last commit."""
        committed = progress_end_offsets(query.query()).get(query.topic, {})
        reset = [p for p, end in ends.items() if end < committed.get(p, 0)]
        if reset:
            # The probe's watermark may predate the last commit: ask the broker afresh.
            fresh = end_offsets(self.probe.opts).get(query.topic, {})
            reset = [p for p in reset if fresh.get(p, 0) < committed.get(p, 0)]
        return reset


class SpeedLayer:
    """Runs the streaming query and feeds its micro-batches to the sink."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        sink: FeatureTableSink,
        ensure_topics: Callable[[], None] | None = None,
        reconcile: Callable[[SparkSession, Settings, FeatureTableSink], int] | None = None,
    ) -> None:
        self.spark = spark
        self._reconcile = reconcile
        self.settings = settings
        self.sink = sink
        self.query: StreamingQuery | None = None
        self._query_name: str | None = None
        self._started = threading.Event()
        self.watch = BrokerWatch(self, ensure_topics)

    def start(self) -> StreamingQuery:
        """Start the query (resuming from the checkpoint if there is one) and its watch."""
        query = self.start_query()
        if self.settings.broker_watch_interval_seconds > 0:
            self.watch.start()
        return query

    def start_query(self) -> StreamingQuery:
        """Start the streaming query from the checkpoint (or ``startingOffsets``)."""
        interval_ms = max(1, round(self.settings.trigger_interval_seconds * 1000))
        writer = (
            clean_song_stream(self.spark, self.settings)
            .writeStream.foreachBatch(self.process_batch)
            .option("checkpointLocation", self.settings.checkpoint_dir)
            .trigger(processingTime=f"{interval_ms} milliseconds")
        )
        with scheduler_pool(self.spark, SPEED_POOL):  # the query's thread keeps the pool
            self.query = writer.start()
        self._started.set()
        log.info(
            "speed layer started",
            query_id=str(self.query.id),
            checkpoint=self.settings.checkpoint_dir,
            source=self.settings.spark_kafka_format,
        )
        return self.query

    def ensure_running(self) -> bool:
        """Start the query again from its checkpoint if it died; True when it had to."""
        query = self.query
        if query is None or query.isActive:
            return False
        log.warning("the streaming query stopped; starting it again", error=str(query.exception()))
        self.start_query()
        return True

    def committed_offsets(self) -> dict[str, dict[str, int]]:
        """Where the last committed micro-batch ended, per topic and partition."""
        return progress_end_offsets(self.query)

    def reconcile(self) -> int:
        """Upsert the master dataset's songs the feature table lacks; return how many."""
        if self._reconcile is None:
            log.warning("records may be lost, but this speed layer has no master dataset to read")
            return 0
        started = time.perf_counter()
        n = self._reconcile(self.spark, self.settings, self.sink)
        log.info(
            "reconciled with the master dataset",
            songs=n,
            seconds=round(time.perf_counter() - started, 2),
        )
        return n

    def query_name(self) -> str:
        """Names this checkpoint's batches in ``stream_batches``.

        Batch ids restart at 0 with a new checkpoint, so the name is the query id Spark
        persists in ``<checkpoint>/metadata`` (it changes exactly when the checkpoint does).
        """
        if self._query_name is None:
            metadata = Path(self.settings.checkpoint_dir) / "metadata"
            if metadata.is_file():
                query_id = json.loads(metadata.read_text().splitlines()[0])["id"]
            else:  # a checkpoint on a remote file system: ask the query
                self._started.wait(60)
                assert self.query is not None
                query_id = str(self.query.id)
            self._query_name = f"songs-{query_id}"
        return self._query_name

    def process_batch(self, batch: DataFrame, batch_id: int) -> BatchResult:
        """``foreachBatch``: DLQ the refused records, upsert the latest version per track."""
        # The cleaning plan is too big for whole-stage code generation: Spark would try to
        # compile it on every micro-batch, fail, and run it without. Skip the doomed compile.
        # ``batch.sparkSession`` is the query's own copy of the session: others keep theirs.
        batch.sparkSession.conf.set("spark.sql.codegen.wholeStage", "false")
        frame = batch.selectExpr(*BATCH_SELECT).toPandas()
        refused = frame["reject_reason"].notna()
        latest = latest_versions(frame[~refused])
        return self.sink.write(self.query_name(), batch_id, latest, dead_letters(frame[refused]))

    def stop(self) -> None:
        """Stop the watch, then the query (the current micro-batch finishes or is abandoned
        uncommitted)."""
        if self.watch.running:
            self.watch.stop()
        if self.query is not None and self.query.isActive:
            self.query.stop()
