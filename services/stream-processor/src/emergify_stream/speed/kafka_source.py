"""A Kafka source for Spark Structured Streaming, written with Spark 4's Python Data Source API.

Same options and output columns as Spark's JVM ``kafka`` format, so production can switch by a
setting; log ends from the Fetch high watermark; a reset topic (its log end fell below the
checkpoint, or the topic was created again: a new topic id) is read from the beginning of its
new log. Design: docs/stream-processor.md, "The Kafka source".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import OffsetOutOfRangeError
from pyspark.sql.datasource import (
    DataSource,
    DataSourceReader,
    DataSourceStreamReader,
    InputPartition,
)
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows
from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

#: The JVM Kafka source's columns and types.
KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, "
    "timestamp timestamp, timestampType int"
)

#: ``{topic: {partition (as a string, JSON keys are strings): next offset}}``
Offsets = dict[str, dict[str, int]]

_ARROW_CHUNK_ROWS = 10_000


class DataLossError(RuntimeError):
    """Offsets the checkpoint relies on are gone from the broker."""


@dataclass(frozen=True)
class KafkaOptions:
    """The source's options, parsed and checked once (same names as Spark's Kafka source)."""

    bootstrap_servers: str
    topics: tuple[str, ...]
    starting_offsets: str = "earliest"
    ending_offsets: str = "latest"
    max_offsets_per_trigger: int | None = None
    fail_on_data_loss: bool = True
    poll_timeout_ms: int = 120_000
    consumer_extra: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> KafkaOptions:
        """Read Spark's option map (keys are case-insensitive there); raise ValueError saying
        which option is missing or wrong."""
        opts = {k.lower(): v for k, v in options.items()}
        bootstrap = opts.get("kafka.bootstrap.servers")
        if not bootstrap:
            raise ValueError("option 'kafka.bootstrap.servers' is required (host:port[,host:port])")
        if "subscribepattern" in opts or "assign" in opts:
            raise ValueError("only 'subscribe' is supported by emergify_kafka (a comma list)")
        topics = tuple(t.strip() for t in opts.get("subscribe", "").split(",") if t.strip())
        if not topics:
            raise ValueError("option 'subscribe' is required: a comma-separated list of topics")
        max_offsets = opts.get("maxoffsetspertrigger")
        if max_offsets is not None and int(max_offsets) < 1:
            raise ValueError(f"maxOffsetsPerTrigger must be >= 1, got {max_offsets}")
        fail = opts.get("failondataloss", "true").strip().lower()
        if fail not in ("true", "false"):
            raise ValueError(f"failOnDataLoss must be true or false, got {fail!r}")
        # Like Spark, other ``kafka.*`` options go to the consumer (dots become underscores).
        extra = tuple(
            sorted(
                (k.removeprefix("kafka.").replace(".", "_"), v)
                for k, v in opts.items()
                if k.startswith("kafka.") and k != "kafka.bootstrap.servers"
            )
        )
        return cls(
            bootstrap_servers=bootstrap,
            topics=topics,
            starting_offsets=opts.get("startingoffsets", "earliest").strip(),
            ending_offsets=opts.get("endingoffsets", "latest").strip(),
            max_offsets_per_trigger=int(max_offsets) if max_offsets is not None else None,
            fail_on_data_loss=fail == "true",
            poll_timeout_ms=int(opts.get("kafkaconsumer.polltimeoutms", "120000")),
            consumer_extra=extra,
        )

    def consumer(self, **overrides: object) -> KafkaConsumer:
        """A group-less consumer that never commits and never creates topics."""
        config: dict[str, object] = {
            k: v for k, v in self.consumer_extra if k in KafkaConsumer.DEFAULT_CONFIG
        }
        config.update(
            bootstrap_servers=self.bootstrap_servers.split(","),
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            auto_offset_reset="none",
        )
        config.update(overrides)
        return KafkaConsumer(**config)


@dataclass(frozen=True)
class TopicPartitionRange(InputPartition):
    """One Spark task: the records ``[start, end)`` of one topic-partition.

    ``after_reset``: the log was reset below the checkpoint; read the new log from its first
    available offset (``start`` is 0) up to ``end``.
    """

    topic: str
    partition: int
    start: int
    end: int
    after_reset: bool = False


# --- offsets: pure functions on plain dicts -------------------------------------------------


def sorted_offsets(offsets: Mapping[str, Mapping[str, int]]) -> Offsets:
    """The same offsets in a stable order; Spark compares offsets by their JSON text, so an
    unstable order would look like new data on every trigger."""
    return {
        t: {p: int(o) for p, o in sorted(offsets[t].items(), key=lambda kv: int(kv[0]))}
        for t in sorted(offsets)
    }


def limit_offsets(start: Offsets, latest: Offsets, max_rows: int) -> Offsets:
    """Cap a micro-batch at ``max_rows`` records, shared among partitions in proportion to
    their backlog (like Spark's Kafka source), every partition with a backlog moving on."""
    # A partition missing from ``start`` appeared later and starts at 0 (see plan_ranges).
    begin = {(t, p): start.get(t, {}).get(p, 0) for t, parts in latest.items() for p in parts}
    backlog = {
        (t, p): max(0, end - begin[t, p]) for t, parts in latest.items() for p, end in parts.items()
    }
    total = sum(backlog.values())
    if total <= max_rows:
        return latest
    capped: Offsets = {t: dict(parts) for t, parts in latest.items()}
    for (t, p), lag in backlog.items():
        if lag == 0:
            continue
        share = max(1, (lag * max_rows) // total)
        capped[t][p] = begin[t, p] + min(lag, share)
    return sorted_offsets(capped)


def parse_offsets_spec(spec: str, what: str) -> Offsets | None:
    """``earliest``/``latest`` give None; JSON gives the offsets (-2 earliest, -1 latest)."""
    if spec.lower() in ("earliest", "latest"):
        return None
    try:
        parsed = json.loads(spec)
        return {t: {str(p): int(o) for p, o in parts.items()} for t, parts in parsed.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValueError(
            f'{what} must be "earliest", "latest" or JSON like {{"topic": {{"0": 23}}}}, '
            f"got {spec!r}"
        ) from exc


# --- talking to the broker ----------------------------------------------------------------


def topic_partitions(consumer: KafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` that exists now (a missing topic has none yet)."""
    consumer.topics()  # refresh metadata so partitions added since are seen
    return [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))]


def topic_id(consumer: KafkaConsumer, topic: str) -> str | None:
    """The id the broker gave ``topic`` (Metadata v10+; a topic created again gets a new one),
    from the consumer's metadata cache; None when the broker or client does not say."""
    cluster = getattr(consumer, "_cluster", None)  # kafka-python keeps no public accessor
    found = cluster.topic_id(topic) if cluster is not None else None
    return str(found) if found is not None else None


def _as_offsets(values: Mapping[TopicPartition, int]) -> Offsets:
    out: Offsets = {}
    for tp, offset in values.items():
        out.setdefault(tp.topic, {})[str(tp.partition)] = int(offset)
    return sorted_offsets(out)


def beginning_offsets(opts: KafkaOptions) -> Offsets:
    """The first available offset of every partition."""
    consumer = opts.consumer()
    try:
        tps = topic_partitions(consumer, opts.topics)
        return _as_offsets(consumer.beginning_offsets(tps)) if tps else {}
    finally:
        consumer.close()


def end_offsets(opts: KafkaOptions, probe_timeout_s: float = 15.0) -> Offsets:
    """The log end (next offset to be written) of every partition.

    ListOffsets gives a first answer; then one Fetch at that position returns the high
    watermark, which is right even where ListOffsets under-reports (see module docstring).
    """
    consumer = opts.consumer(fetch_max_wait_ms=20, max_poll_records=1)
    try:
        tps = topic_partitions(consumer, opts.topics)
        if not tps:
            return {}
        listed = consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, listed[tp])
        deadline = time.monotonic() + probe_timeout_s
        # A fresh consumer has no high watermark until a Fetch for the partition came back.
        while any(consumer.highwater(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                missing = [str(tp) for tp in tps if consumer.highwater(tp) is None]
                raise TimeoutError(f"no Fetch response with a high watermark for {missing}")
            consumer.poll(timeout_ms=100, update_offsets=False)
        return _as_offsets({tp: max(listed[tp], consumer.highwater(tp)) for tp in tps})
    finally:
        consumer.close()


class WatermarkProbe:
    """One long-lived consumer that finds the log end of every partition cheaply.

    It is assigned to every partition and kept at the high watermark; each :meth:`end_offsets`
    call polls briefly, so fetch responses (which carry the high watermark, see the module
    docstring) come back, and moves the consumer to the watermark again. A watermark is never
    above the log end, and the consumer keeps fetching, so the tail of the log is never
    stranded. A log reset below the consumer's position (the broker lost the topic), a topic
    created again (a new id) or partitions that appeared or vanished put the consumer at the
    log end afresh. Whenever the ends move, the topic ids are read afresh after the fetch that
    moved them, so the ends of a topic created again always come with its new id. Any other
    error closes the consumer; the next call starts a new one (the broker may have restarted).

    :attr:`topic_ids` holds the last id seen of every topic (see :func:`topic_id`).
    """

    def __init__(self, opts: KafkaOptions, poll_ms: int = 30, metadata_max_age_ms: int = 5_000):
        self.opts = opts
        self.poll_ms = poll_ms
        self.metadata_max_age_ms = metadata_max_age_ms
        self.topic_ids: dict[str, str] = {}
        self._consumer: KafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        self._ends: dict[TopicPartition, int] | None = None  # reported by the last call

    def end_offsets(self) -> Offsets:
        """The log end of every partition that exists now (``{}`` for a missing topic)."""
        try:
            return self._probe()
        except Exception:
            self.close()
            raise

    def _probe(self) -> Offsets:
        if self._consumer is None:
            self._consumer = self.opts.consumer(
                fetch_max_wait_ms=20,
                max_poll_records=1,
                # Only the watermark matters: fetch as little data as the broker allows.
                max_partition_fetch_bytes=1024,
                fetch_max_bytes=4096,
                metadata_max_age_ms=self.metadata_max_age_ms,
            )
            self._tps, self._ends = [], None
        consumer = self._consumer
        tps = self._partitions(consumer)
        if tps != self._tps or self._recreated(consumer):
            if not tps:
                return self._unassign(consumer)
            self._anchor(consumer, tps)
        else:
            try:
                consumer.poll(timeout_ms=self.poll_ms)
            except OffsetOutOfRangeError:
                # The log was reset below our position (the broker lost the topic).
                self._anchor(consumer, tps)
        ends = self._at_watermark(consumer, tps)
        if ends != self._ends:
            # Records arrived (or another log did): read the topic ids afresh, after the
            # fetch that saw them, so a topic created again never passes for the old one.
            consumer.topics()
            fresh = self._partitions(consumer)
            if fresh != tps or self._recreated(consumer):
                if not fresh:
                    return self._unassign(consumer)
                self._anchor(consumer, fresh)
                ends = self._at_watermark(consumer, fresh)
            self._ends = ends
        return _as_offsets(ends)

    def _partitions(self, consumer: KafkaConsumer) -> list[TopicPartition]:
        return [
            TopicPartition(t, p)
            for t in self.opts.topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]

    def _recreated(self, consumer: KafkaConsumer) -> bool:
        """Record the ids in the consumer's metadata; True when a topic's id changed."""
        ids = {t: i for t in self.opts.topics if (i := topic_id(consumer, t)) is not None}
        changed = any(self.topic_ids.get(t, i) != i for t, i in ids.items())
        self.topic_ids = {**self.topic_ids, **ids}  # a missing topic keeps its last id
        return changed

    def _unassign(self, consumer: KafkaConsumer) -> Offsets:
        consumer.unsubscribe()
        self._tps, self._ends = [], {}
        return {}

    @staticmethod
    def _at_watermark(consumer: KafkaConsumer, tps: list[TopicPartition]) -> dict:
        """Each partition's high watermark (where the consumer waits, before the first
        fetch since it moved), with the consumer moved there to wait for the next records."""
        ends = {}
        for tp in tps:
            highwater = consumer.highwater(tp)
            if highwater is None:  # no fetch came back since the last move: where we wait
                ends[tp] = consumer.position(tp)
                continue
            ends[tp] = highwater
            if consumer.position(tp) != highwater:
                consumer.seek(tp, highwater)  # wait at the end, for the next records
        return ends

    def _anchor(self, consumer: KafkaConsumer, tps: list[TopicPartition]) -> None:
        """Assign ``tps``, move to their listed log ends and wait for a high watermark each."""
        listed = consumer.end_offsets(tps)
        consumer.unsubscribe()  # forget the old high watermarks: they may be another log's
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, listed[tp])
        self._tps = tps
        deadline = time.monotonic() + 15.0
        while any(consumer.highwater(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                missing = [str(tp) for tp in tps if consumer.highwater(tp) is None]
                raise TimeoutError(f"no Fetch response with a high watermark for {missing}")
            consumer.poll(timeout_ms=50, update_offsets=False)

    def close(self) -> None:
        """Close the consumer (a later call opens a new one; :attr:`topic_ids` are kept)."""
        consumer, self._consumer = self._consumer, None
        self._tps, self._ends = [], None
        if consumer is not None:
            try:
                consumer.close()
            except Exception as exc:  # closing after a broker loss can fail; nothing to keep
                log.debug("closing the watermark consumer failed: %r", exc)


def read_range(
    opts: KafkaOptions, part: TopicPartitionRange, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """Yield the records ``[start, end)`` of one partition as Arrow batches of ``schema``."""
    if part.end <= part.start:
        return
    tp = TopicPartition(part.topic, part.partition)
    consumer = opts.consumer(max_poll_records=_ARROW_CHUNK_ROWS, max_partition_fetch_bytes=8 << 20)
    try:
        consumer.assign([tp])
        start = part.start
        if part.after_reset:  # the new log may not begin at 0 (retention on Apache Kafka)
            start = max(start, consumer.beginning_offsets([tp])[tp])
        consumer.seek(tp, start)
        cols: list[list[object]] = [[] for _ in range(7)]
        position = start
        stalled_since = time.monotonic()
        while position < part.end:
            try:
                records = consumer.poll(timeout_ms=200).get(tp, [])
            except OffsetOutOfRangeError:
                # The log was reset below this range while the batch ran (broker restart).
                message = (
                    f"{tp.topic}-{tp.partition}: offset {position} is out of range; the broker "
                    f"lost the records up to {part.end}"
                )
                if opts.fail_on_data_loss:
                    raise DataLossError(message + " (set failOnDataLoss=false to go on)") from None
                log.warning("%s; going on without them", message)
                break
            for rec in records:
                if rec.offset < part.start:
                    continue
                if rec.offset >= part.end:
                    break
                for col, value in zip(
                    cols,
                    (
                        rec.key,
                        rec.value,
                        part.topic,
                        part.partition,
                        rec.offset,
                        rec.timestamp * 1000,  # ms -> us
                        max(rec.timestamp_type, 0),
                    ),
                    strict=True,
                ):
                    col.append(value)
            new_position = consumer.position(tp)
            if new_position > position:
                position, stalled_since = new_position, time.monotonic()
            else:
                highwater = consumer.highwater(tp)
                if highwater is not None and highwater <= position < part.end:
                    message = (
                        f"{tp.topic}-{tp.partition}: planned to read up to offset {part.end} "
                        f"but the log ends at {highwater}; records were lost"
                    )
                    if opts.fail_on_data_loss:
                        raise DataLossError(message + " (set failOnDataLoss=false to go on)")
                    log.warning("%s; going on without them", message)
                    break
                if (time.monotonic() - stalled_since) * 1000 > opts.poll_timeout_ms:
                    raise TimeoutError(
                        f"{tp.topic}-{tp.partition}: no records at offset {position} for "
                        f"{opts.poll_timeout_ms} ms (planned end {part.end})"
                    )
            if len(cols[0]) >= _ARROW_CHUNK_ROWS:
                yield _to_batch(cols, schema)
                cols = [[] for _ in range(7)]
        if cols[0]:
            yield _to_batch(cols, schema)
    finally:
        consumer.close()


def _to_batch(cols: list[list[object]], schema: pa.Schema) -> pa.RecordBatch:
    arrays = [pa.array(col, type=field.type) for col, field in zip(cols, schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def plan_ranges(start: Offsets, end: Offsets) -> list[TopicPartitionRange]:
    """One range per topic-partition with records between ``start`` and ``end``.

    A partition missing from ``start`` appeared later and starts at 0. A partition whose end
    is below its start was reset (the broker lost its log; only planned with
    failOnDataLoss=false). The streaming reader ends such a batch at the first offset of the
    new log (:meth:`KafkaStreamReader.latestOffset`), which reads nothing; a batch logged by
    an earlier version of this source may end above it: its new log is read from the
    beginning up to ``end``.
    """
    ranges = []
    for topic, parts in end.items():
        for p, stop in parts.items():
            begin = start.get(topic, {}).get(p, 0)
            if stop > begin:
                ranges.append(TopicPartitionRange(topic, int(p), begin, stop))
            elif stop < begin and stop > 0:
                ranges.append(TopicPartitionRange(topic, int(p), 0, stop, after_reset=True))
    return ranges


# --- Spark's interfaces ---------------------------------------------------------------------


class KafkaStreamReader(DataSourceStreamReader):
    """Plans micro-batches from Kafka offsets; the instance lives in the driver's planner."""

    def __init__(self, options: KafkaOptions, schema: StructType) -> None:
        self.options = options
        self.arrow_schema = to_arrow_schema(schema, timezone="UTC")
        self._latest: Offsets | None = None
        self._probe = WatermarkProbe(options)
        #: The last id seen of each topic (kept while the topic is missing), to tell a topic
        #: created again from the same one grown.
        self._topic_ids: dict[str, str] = {}

    def initialOffset(self) -> dict:
        """Where a query without a checkpoint starts (``startingOffsets``)."""
        spec = self.options.starting_offsets
        if spec.lower() == "latest":
            return end_offsets(self.options)
        earliest = beginning_offsets(self.options)
        given = parse_offsets_spec(spec, "startingOffsets")
        if given is None:
            return earliest
        latest = end_offsets(self.options) if any(-1 in p.values() for p in given.values()) else {}
        merged = {t: dict(parts) for t, parts in earliest.items()}
        for topic, parts in given.items():
            for p, offset in parts.items():
                resolved = {
                    -2: earliest.get(topic, {}).get(p, 0),
                    -1: latest.get(topic, {}).get(p, 0),
                }
                merged.setdefault(topic, {})[p] = resolved.get(offset, offset)
        return sorted_offsets(merged)

    def getDefaultReadLimit(self) -> ReadLimit:
        """``maxOffsetsPerTrigger`` as Spark's read limit."""
        n = self.options.max_offsets_per_trigger
        return ReadMaxRows(n) if n else ReadAllAvailable()

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        """The end of the next micro-batch: the log end, capped by ``limit``.

        A reset partition (its log end fell below ``start``, or its topic was created again
        since the last trigger: a new topic id) ends this batch at the beginning of its new
        log, so the checkpoint moves onto the new log at once: nothing of it is read in this
        batch, and the next batches read it from there, however long it has grown.
        """
        start = sorted_offsets(start)
        latest = self._probe.end_offsets()
        ids = dict(self._probe.topic_ids)
        recreated = {t for t, i in ids.items() if self._topic_ids.get(t, i) != i}
        known = {t: dict(parts) for t, parts in latest.items()}
        reset: dict[tuple[str, str], str] = {}  # (topic, partition) -> what was seen
        for topic, parts in start.items():
            for p, begin in parts.items():
                end = known.get(topic, {}).get(p)
                if end is None:
                    # The partition vanished from metadata (topic deleted or broker restarting):
                    # keep our position rather than guess.
                    known.setdefault(topic, {})[p] = begin
                elif end < begin:
                    reset[topic, p] = (
                        f"{topic}-{p}: the checkpoint is at offset {begin} but the log now ends "
                        f"at {end}"
                    )
                elif topic in recreated and begin > 0:
                    reset[topic, p] = (
                        f"{topic}-{p}: the topic was created again (a new topic id); the "
                        f"checkpoint's offset {begin} belongs to the old log"
                    )
        if reset:
            self._rebase(known, reset)
        self._topic_ids.update(ids)  # only once the reset (if any) is planned
        known = sorted_offsets(known)
        self._latest = known
        if isinstance(limit, ReadMaxRows):
            # A re-based partition ends at or below ``start``: no backlog, not capped.
            return sorted_offsets(limit_offsets(start, known, limit.max_rows))
        return known

    def _rebase(self, known: Offsets, reset: Mapping[tuple[str, str], str]) -> None:
        """Move each reset partition of ``known`` to the first offset of its new log, or raise
        :class:`DataLossError` with ``failOnDataLoss``."""
        message = "; ".join(reset.values()) + (
            "; the broker lost data (the embedded broker keeps topics in memory only)"
        )
        if self.options.fail_on_data_loss:
            raise DataLossError(
                message + ". Set failOnDataLoss=false to continue from the new log, "
                "or start from a new checkpoint."
            )
        first = beginning_offsets(self.options)
        for topic, p in reset:
            known.setdefault(topic, {})[p] = first.get(topic, {}).get(p, 0)
        log.warning("%s; reading the new log from its beginning", message)

    def reportLatestOffset(self) -> dict | None:
        """The log end seen by the last ``latestOffset`` call (for query progress)."""
        return self._latest

    def partitions(self, start: dict, end: dict) -> Sequence[InputPartition]:
        """One task per topic-partition range."""
        return plan_ranges(start, end)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        """Runs in a Spark task: the records of one range."""
        assert isinstance(partition, TopicPartitionRange)
        return read_range(self.options, partition, self.arrow_schema)

    def commit(self, end: dict) -> None:
        """Nothing to do: offsets live in Spark's checkpoint, not in a consumer group."""

    def stop(self) -> None:
        """The query stops: close the driver's consumer."""
        self._probe.close()


class KafkaBatchReader(DataSourceReader):
    """``spark.read.format("emergify_kafka")``: ``startingOffsets`` to ``endingOffsets``."""

    def __init__(self, options: KafkaOptions, schema: StructType) -> None:
        self.options = options
        self.arrow_schema = to_arrow_schema(schema, timezone="UTC")

    def partitions(self) -> Sequence[InputPartition]:
        """Plan one task per topic-partition."""
        stream = KafkaStreamReader(self.options, StructType())
        start = stream.initialOffset()
        given_end = parse_offsets_spec(self.options.ending_offsets, "endingOffsets")
        end = end_offsets(self.options)
        if given_end is not None:
            for topic, parts in given_end.items():
                for p, offset in parts.items():
                    if offset != -1:
                        end.setdefault(topic, {})[p] = offset
        return plan_ranges(start, end)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        """Runs in a Spark task: the records of one range."""
        assert isinstance(partition, TopicPartitionRange)
        return read_range(self.options, partition, self.arrow_schema)


class KafkaDataSource(DataSource):
    """``format("emergify_kafka")``: Kafka topics as a streaming (or batch) DataFrame."""

    @classmethod
    def name(cls) -> str:
        """The format name to use in ``spark.readStream.format(...)``."""
        return "emergify_kafka"

    def schema(self) -> str:
        """Always the JVM Kafka source's columns."""
        return KAFKA_SCHEMA

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        """The micro-batch reader."""
        return KafkaStreamReader(KafkaOptions.parse(self.options), schema)

    def reader(self, schema: StructType) -> DataSourceReader:
        """The batch reader."""
        return KafkaBatchReader(KafkaOptions.parse(self.options), schema)
