"""The speed layer: songs topic -> parse -> clean (Spark SQL) -> feature table.

``readStream`` on the songs topic (``settings.spark_kafka_format``: our Python source or
Spark's JVM one), ``from_json`` with the explicit schema of :class:`SongEvent`, then a temp
view cleaned by :data:`CLEAN_SQL`: names trimmed, every Song rule checked, each refused
record given a readable reason. Each micro-batch is read from Kafka once (one Spark job, no
shuffle: a small batch is done in about a second), then split: refused records go to the
DLQ and the latest version per track id (:func:`latest_versions`) to the
:class:`~emergify_stream.speed.feature_table.FeatureTableSink`.

The layer looks after itself (:class:`BrokerWatch`): a query that died (the broker went away
mid-batch) is started again from its checkpoint, and when the broker lost records (the
embedded broker forgets everything when it restarts) the feature table is reconciled with the
master dataset by the ``reconcile`` callable it is given (the stream processor passes
:func:`emergify_stream.batch.rebuild.reconcile`: the speed layer does not import the batch
layer).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import structlog
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from emergify_contracts.events import DeadLetter
from emergify_contracts.song import AUDIO_FEATURES, LOUDNESS_RANGE, TEMPO_RANGE, UNIT_FEATURES
from emergify_contracts.versions import STREAM_POSITION, sort_columns
from emergify_stream.config import Settings
from emergify_stream.speed.feature_table import BATCH_COLUMNS, BatchResult, FeatureTableSink
from emergify_stream.speed.kafka_source import KafkaOptions, WatermarkProbe, end_offsets

log = structlog.get_logger()

#: Explicit schema of a :class:`~emergify_contracts.events.SongEvent` value. ``ingested_at``
#: stays text here and is converted with ``try_cast`` in SQL, so a bad timestamp becomes a
#: readable reason rather than a failed query.
SONG_EVENT_SCHEMA = (
    "schema_version int, upload_id string, source string, ingested_at string, "
    "song struct<track_id: string, name: string, artists: array<string>, "
    "artist_ids: array<string>, album: string, release_date: string, duration_ms: bigint, "
    "popularity: int, explicit: boolean, genres: array<string>, "
    + ", ".join(f"{f}: double" for f in AUDIO_FEATURES)
    + ", key: int, mode: int, time_signature: int>"
)

_ID = "'^[0-9A-Za-z]{22}$'"
_ID_TEXT = "is not a 22-character base62 Spotify id"


def _feature_checks() -> list[str]:
    lo, hi = LOUDNESS_RANGE
    t_lo, t_hi = TEMPO_RANGE
    checks = [
        f"CASE WHEN s.{f} IS NULL THEN '{f} is missing or not a number' "
        f"WHEN isnan(s.{f}) OR s.{f} < 0 OR s.{f} > 1 "
        f"THEN concat('{f} ', CAST(s.{f} AS STRING), ' is outside [0, 1]') END"
        for f in UNIT_FEATURES
    ]
    checks.append(
        "CASE WHEN s.loudness IS NULL THEN 'loudness is missing or not a number' "
        f"WHEN isnan(s.loudness) OR s.loudness < {lo} OR s.loudness > {hi} "
        "THEN concat('loudness ', CAST(s.loudness AS STRING), "
        f"' dB is outside [{lo:g}, {hi:g}]') END"
    )
    checks.append(
        "CASE WHEN s.tempo IS NULL THEN 'tempo is missing or not a number' "
        f"WHEN isnan(s.tempo) OR s.tempo < {t_lo} OR s.tempo > {t_hi} "
        "THEN concat('tempo ', CAST(s.tempo AS STRING), "
        f"' BPM must be a finite number in [{t_lo:g}, {t_hi:g}]') END"
    )
    return checks


_SONG_CHECKS = [
    "CASE WHEN coalesce(trim(s.track_id), '') = '' THEN 'track_id is required' "
    f"WHEN NOT trim(s.track_id) RLIKE {_ID} "
    f"THEN concat('track_id ''', s.track_id, ''' {_ID_TEXT}') END",
    "CASE WHEN coalesce(trim(s.name), '') = '' THEN 'name is required' "
    "WHEN length(trim(s.name)) > 500 THEN 'name is longer than 500 characters' END",
    "CASE WHEN size(coalesce(artists_clean, array())) = 0 THEN 'artists needs at least one name' "
    "WHEN size(artists_clean) > 50 THEN 'artists has more than 50 names' END",
    f"CASE WHEN exists(artist_ids_clean, a -> NOT a RLIKE {_ID}) THEN concat('artist id ''', "
    f"element_at(filter(artist_ids_clean, a -> NOT a RLIKE {_ID}), 1), ''' {_ID_TEXT}') "
    "WHEN size(artist_ids_clean) > 50 THEN 'artist_ids has more than 50 ids' END",
    "CASE WHEN length(trim(s.album)) > 500 THEN 'album is longer than 500 characters' END",
    "CASE WHEN coalesce(trim(s.release_date), '') <> '' AND NOT trim(s.release_date) "
    "RLIKE '^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$' THEN concat('release_date ''', s.release_date, "
    "''' is not YYYY, YYYY-MM or YYYY-MM-DD') END",
    "CASE WHEN s.duration_ms < 0 "
    "THEN concat('duration_ms ', CAST(s.duration_ms AS STRING), ' must be >= 0') END",
    *(
        f"CASE WHEN s.{f} NOT BETWEEN {lo} AND {hi} "
        f"THEN concat('{f} ', CAST(s.{f} AS STRING), ' is outside [{lo}, {hi}]') END"
        for f, lo, hi in (
            ("popularity", 0, 100),
            ("key", -1, 11),
            ("mode", 0, 1),
            ("time_signature", 0, 7),
        )
    ),
    "CASE WHEN size(genres_clean) > 100 THEN 'genres has more than 100 entries' END",
    *_feature_checks(),
    "CASE WHEN coalesce(upload_id, '') = '' THEN 'upload_id is required' END",
    "CASE WHEN coalesce(source, '') = '' THEN 'source is required' END",
    "CASE WHEN event.ingested_at IS NOT NULL AND try_cast(event.ingested_at AS TIMESTAMP) IS NULL "
    "THEN concat('ingested_at ''', event.ingested_at, ''' is not an ISO 8601 timestamp') END",
]

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
    filter(transform(event.song.artists, a -> trim(a)), a -> coalesce(a, '') <> '')
      AS artists_clean,
    filter(transform(event.song.artist_ids, a -> trim(a)), a -> coalesce(a, '') <> '')
      AS artist_ids_clean,
    filter(transform(event.song.genres, g -> trim(g)), g -> coalesce(g, '') <> '') AS genres_clean
  FROM song_events
)
SELECT
  trim(s.track_id) AS track_id,
  trim(s.name) AS name,
  nullif(trim(s.album), '') AS album,
  nullif(trim(s.release_date), '') AS release_date,
  upload_id,
  source,
  artists_clean AS artists,
  coalesce(artist_ids_clean, array()) AS artist_ids,
  coalesce(genres_clean, array()) AS genres,
  s.duration_ms,
  s.popularity,
  s.key,
  s.mode,
  s.time_signature,
  kafka_partition,
  s.explicit,
  {", ".join(f"s.{f}" for f in AUDIO_FEATURES)},
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
    parsed = raw.withColumn("event", F.from_json(F.col("value").cast("string"), SONG_EVENT_SCHEMA))
    parsed.createOrReplaceTempView("song_events")
    return spark.sql(CLEAN_SQL)


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


class BrokerWatch:
    """Watches the songs topic for the speed layer, in a thread of its own.

    Every ``broker_watch_interval_seconds``: a query that died is started again from its
    checkpoint; the songs topic's log end is probed. A probe that fails (broker away), a
    missing topic (created again through ``ensure_topics``) or a log end below the last
    committed offset (the log was reset) means records may be lost, so once the broker
    answers again the feature table is reconciled with the master dataset.
    """

    def __init__(self, layer: SpeedLayer, ensure_topics: Callable[[], None] | None) -> None:
        self.layer = layer
        self.ensure_topics = ensure_topics
        settings = layer.settings
        self.interval = settings.broker_watch_interval_seconds
        self.probe = WatermarkProbe(
            KafkaOptions.parse(source_options(settings)), metadata_max_age_ms=1_000
        )
        self.reconcile_needed = False
        self.reconciled = 0  # songs upserted from the master dataset, since start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emergify-broker-watch", daemon=True)

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
        """One round: restart a dead query, probe the topic, reconcile when needed."""
        layer = self.layer
        query = layer.query
        if query is not None and not query.isActive and not self._stop.is_set():
            log.warning(
                "the streaming query stopped; starting it again", error=str(query.exception())
            )
            self.reconcile_needed = True
            layer.start_query()
        topic = layer.settings.songs_topic
        try:
            ends = self.probe.end_offsets()
        except Exception as exc:
            if not self.reconcile_needed:
                log.warning(
                    "the broker does not answer; will reconcile when it is back", error=repr(exc)
                )
            self.reconcile_needed = True
            return
        if topic not in ends:
            log.warning("the songs topic is missing (broker restarted?); creating it", topic=topic)
            self.reconcile_needed = True
            if self.ensure_topics is not None:
                self.ensure_topics()
            return
        committed = layer.committed_offsets().get(topic, {})
        reset = [p for p, end in ends[topic].items() if end < committed.get(p, 0)]
        if reset:
            # The probe's watermark may predate the last commit: ask the broker afresh.
            fresh = end_offsets(self.probe.opts).get(topic, {})
            reset = [p for p in reset if fresh.get(p, 0) < committed.get(p, 0)]
        if reset:
            log.warning("the songs topic was reset below the checkpoint", partitions=reset)
            self.reconcile_needed = True
        if self.reconcile_needed:
            self.reconciled += layer.reconcile()
            self.reconcile_needed = False


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
        self.query = (
            clean_song_stream(self.spark, self.settings)
            .writeStream.foreachBatch(self.process_batch)
            .option("checkpointLocation", self.settings.checkpoint_dir)
            .trigger(processingTime=f"{interval_ms} milliseconds")
            .start()
        )
        self._started.set()
        log.info(
            "speed layer started",
            query_id=str(self.query.id),
            checkpoint=self.settings.checkpoint_dir,
            source=self.settings.spark_kafka_format,
        )
        return self.query

    def committed_offsets(self) -> dict[str, dict[str, int]]:
        """Where the last committed micro-batch ended, per topic and partition."""
        progress = self.query.lastProgress if self.query is not None else None
        if not progress or not progress.get("sources"):
            return {}
        end = progress["sources"][0].get("endOffset")
        if isinstance(end, str):
            end = json.loads(end)
        return {t: {p: int(o) for p, o in parts.items()} for t, parts in (end or {}).items()}

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
