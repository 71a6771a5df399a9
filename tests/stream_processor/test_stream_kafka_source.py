"""The emergify_kafka streaming source against the real (embedded) broker and real Spark."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from pyspark.errors import StreamingQueryException
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows
from pyspark.sql.types import StructType
from testkit import wait_for

from emergify_cli.broker import EmbeddedBroker, create_topics
from emergify_stream.speed.kafka_source import (
    DataLossError,
    KafkaOptions,
    KafkaStreamReader,
    end_offsets,
    limit_offsets,
    plan_ranges,
)


def start_query(spark, bootstrap: str, topic: str, checkpoint: Path, **options: str):
    """Stream ``topic`` into a list of (partition, offset, key, value); returns (query, rows)."""
    rows: list[tuple[int, int, bytes, bytes]] = []
    lock = threading.Lock()

    def collect(batch, _batch_id: int) -> None:
        got = batch.select("partition", "offset", "key", "value").collect()
        with lock:
            rows.extend((r.partition, r.offset, bytes(r.key), bytes(r.value)) for r in got)

    reader = (
        spark.readStream.format("emergify_kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
    )
    for k, v in options.items():
        reader = reader.option(k, v)
    query = (
        reader.load()
        .writeStream.foreachBatch(collect)
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime="300 milliseconds")
        .start()
    )
    return query, rows


def wait_rows(query, rows: list, n: int, timeout: float = 120.0) -> None:
    """Wait until ``rows`` holds ``n`` records and the query has settled on them: no trigger
    running, and its last batch ended, in every partition, right after the last record
    delivered. A record read twice is then already in ``rows`` (offsets, not a pause)."""

    def read_n() -> bool:
        if query.exception() is not None:
            raise AssertionError(f"query failed: {query.exception()}")
        return len(rows) >= n

    wait_for(read_n, timeout, f"{n} records", interval=0.2)

    def settled() -> bool:
        progress = query.lastProgress
        if progress is None or query.status["isTriggerActive"]:
            return False
        end = progress["sources"][0]["endOffset"]
        end = json.loads(end) if isinstance(end, str) else end
        ends = {int(p): o for parts in end.values() for p, o in parts.items()}
        last = {partition: offset for partition, offset, _, _ in list(rows)}
        return all(ends.get(p) == offset + 1 for p, offset in last.items())

    wait_for(settled, timeout, "the query to settle on the records it delivered", 0.2)


def records(prefix: str, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}{i}".encode(), f"value-{prefix}{i}".encode()) for i in range(n)]


def test_limit_offsets_shares_the_cap_by_backlog() -> None:
    start = {"t": {"0": 0, "1": 100, "2": 50}}
    latest = {"t": {"0": 1000, "1": 100, "2": 1050}}
    capped = limit_offsets(start, latest, 500)
    assert capped == {"t": {"0": 250, "1": 100, "2": 300}}
    assert limit_offsets(start, latest, 5000) == latest
    assert [(r.partition, r.start, r.end) for r in plan_ranges(start, capped)] == [
        (0, 0, 250),
        (2, 50, 300),
    ]
    # A partition that appeared after the start offsets begins at 0.
    assert [(r.partition, r.start, r.end) for r in plan_ranges({"t": {}}, {"t": {"3": 7}})] == [
        (3, 0, 7)
    ]


def test_options_say_what_is_missing() -> None:
    with pytest.raises(ValueError, match=r"kafka\.bootstrap\.servers"):
        KafkaOptions.parse({"subscribe": "x"})
    with pytest.raises(ValueError, match="subscribe"):
        KafkaOptions.parse({"kafka.bootstrap.servers": "h:1"})


def test_end_offsets_include_the_tail_of_multi_record_batches(
    broker: EmbeddedBroker, new_topic: Callable[[int], str], producer
) -> None:
    topic = new_topic(3)
    producer(broker.bootstrap, topic, records("k", 3000), linger_ms=100)
    opts = KafkaOptions.parse({"kafka.bootstrap.servers": broker.bootstrap, "subscribe": topic})
    ends = end_offsets(opts)
    assert sum(ends[topic].values()) == 3000
    # Whatever ListOffsets says, the end we plan with is never below it.
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    listed = consumer.end_offsets([TopicPartition(topic, p) for p in range(3)])
    consumer.close()
    assert all(ends[topic][str(tp.partition)] >= off for tp, off in listed.items())


@pytest.mark.spark
def test_stream_reads_every_record_once_even_the_tail(
    spark, broker: EmbeddedBroker, new_topic: Callable[[int], str], producer, tmp_path: Path
) -> None:
    topic = new_topic(3)
    sent = records("a", 5000)
    producer(broker.bootstrap, topic, sent, linger_ms=100)
    query, rows = start_query(
        spark, broker.bootstrap, topic, tmp_path / "ck", maxOffsetsPerTrigger="1500"
    )
    try:
        wait_rows(query, rows, 5000)
        more = records("b", 777)
        producer(broker.bootstrap, topic, more, linger_ms=100)
        wait_rows(query, rows, 5777)
    finally:
        query.stop()
    assert len(rows) == 5777
    assert len({(p, o) for p, o, _, _ in rows}) == 5777
    assert sorted((k, v) for _, _, k, v in rows) == sorted(sent + more)
    sizes = [p["numInputRows"] for p in query.recentProgress]
    assert max(sizes) <= 1500


@pytest.mark.spark
def test_restart_resumes_from_the_checkpoint(
    spark, broker: EmbeddedBroker, new_topic: Callable[[int], str], producer, tmp_path: Path
) -> None:
    topic = new_topic(2)
    checkpoint = tmp_path / "ck"
    producer(broker.bootstrap, topic, records("a", 800), linger_ms=50)
    query, first = start_query(spark, broker.bootstrap, topic, checkpoint)
    try:
        wait_rows(query, first, 800)
    finally:
        query.stop()
    producer(broker.bootstrap, topic, records("b", 600), linger_ms=50)
    query, second = start_query(spark, broker.bootstrap, topic, checkpoint)
    try:
        wait_rows(query, second, 600)
    finally:
        query.stop()
    assert len(first) == 800 and len(second) == 600
    assert {k for _, _, k, _ in first} == {k for k, _ in records("a", 800)}
    assert {k for _, _, k, _ in second} == {k for k, _ in records("b", 600)}


@pytest.mark.spark
def test_lost_broker_data_fails_or_reads_the_new_log_from_its_start(
    spark, fresh_broker: EmbeddedBroker, producer, tmp_path: Path
) -> None:
    topic = "lossy"
    create_topics(fresh_broker.bootstrap, [topic], 1)
    producer(fresh_broker.bootstrap, topic, records("a", 300))
    checkpoint = tmp_path / "ck"
    query, rows = start_query(spark, fresh_broker.bootstrap, topic, checkpoint)
    try:
        wait_rows(query, rows, 300)
    finally:
        query.stop()

    # The embedded broker keeps topics in memory: a restart loses them.
    fresh_broker.stop()
    fresh_broker.start()
    create_topics(fresh_broker.bootstrap, [topic], 1)
    producer(fresh_broker.bootstrap, topic, records("b", 100))

    query, rows = start_query(spark, fresh_broker.bootstrap, topic, checkpoint)
    try:
        with pytest.raises(StreamingQueryException, match="the broker lost data"):
            query.awaitTermination(120)
        assert DataLossError.__name__ in str(query.exception())
    finally:
        query.stop()
    assert rows == []

    query, rows = start_query(
        spark, fresh_broker.bootstrap, topic, checkpoint, failOnDataLoss="false"
    )
    try:
        # The new log (end 100 < checkpoint 300) is read from its start: nothing written
        # after the reset is skipped.
        wait_rows(query, rows, 100)
        assert sorted(k for _, _, k, _ in rows) == sorted(k for k, _ in records("b", 100))
        producer(fresh_broker.bootstrap, topic, records("c", 400))
        wait_rows(query, rows, 500)
    finally:
        query.stop()
    keys = [k for _, _, k, _ in rows]
    assert len(keys) == len(set(keys)) == 500
    assert set(keys) == {k for k, _ in records("b", 100) + records("c", 400)}
    assert [o for _, o, _, _ in rows] == list(range(500))


@pytest.mark.spark
def test_a_broker_restart_under_a_running_query_does_not_stop_it(
    spark, fresh_broker: EmbeddedBroker, producer, tmp_path: Path
) -> None:
    topic = "restarted"
    create_topics(fresh_broker.bootstrap, [topic], 2)
    producer(fresh_broker.bootstrap, topic, records("a", 400))
    query, rows = start_query(
        spark, fresh_broker.bootstrap, topic, tmp_path / "ck", failOnDataLoss="false"
    )
    try:
        wait_rows(query, rows, 400)
        fresh_broker.stop()
        time.sleep(2)  # a few triggers without a broker
        fresh_broker.start()
        create_topics(fresh_broker.bootstrap, [topic], 2)
        producer(fresh_broker.bootstrap, topic, records("b", 60))
        wait_rows(query, rows, 460)
        assert query.isActive
    finally:
        query.stop()
    keys = [k for _, _, k, _ in rows]
    assert len(keys) == len(set(keys)) == 460
    assert set(keys) == {k for k, _ in records("a", 400) + records("b", 60)}


@pytest.mark.parametrize("new_records", [3, 40])
def test_a_reset_topic_moves_the_source_onto_its_new_log_whatever_its_length(
    fresh_broker: EmbeddedBroker, producer, new_records: int
) -> None:
    """The broker lost the topic under a running source. Whether the new log is still shorter
    than the checkpoint (3 < 10) or has already outgrown it before the source looked (40):
    the next batch the source plans ends at the new log's start (the checkpoint moves onto
    the new log), and the one after holds every new record; no batch covers the old offsets."""
    topic = "reset"
    # One key, so one partition; as many partitions as the broker gives a topic a client asks
    # for before it is created (the restarted broker may do that), so the key keeps its place.
    partitions = 4
    create_topics(fresh_broker.bootstrap, [topic], partitions)
    producer(fresh_broker.bootstrap, topic, [(b"k", f"a{i}".encode()) for i in range(10)])
    options = {
        "kafka.bootstrap.servers": fresh_broker.bootstrap,
        "subscribe": topic,
        "failOnDataLoss": "false",
    }
    reader = KafkaStreamReader(KafkaOptions.parse(options), StructType())
    try:
        checkpoint = reader.latestOffset(reader.initialOffset(), ReadAllAvailable())
        (p,) = [p for p, end in checkpoint[topic].items() if end]
        assert checkpoint[topic][p] == 10

        fresh_broker.stop()
        fresh_broker.start()
        create_topics(fresh_broker.bootstrap, [topic], partitions)
        producer(
            fresh_broker.bootstrap, topic, [(b"k", f"b{i}".encode()) for i in range(new_records)]
        )

        def next_end() -> dict | None:
            # A trigger; one that still sees the old log (or none) plans nothing.
            try:
                end = reader.latestOffset(checkpoint, ReadMaxRows(1000))
            except Exception:  # the broker is still coming back: the query would retry
                return None
            return end if end != checkpoint else None

        moved = wait_for(next_end, 60, "the source to notice the new log", interval=0.2)
        assert moved[topic][p] == 0
        assert plan_ranges(checkpoint, moved) == []
        end = reader.latestOffset(moved, ReadMaxRows(1000))
        assert [(r.partition, r.start, r.end) for r in plan_ranges(moved, end)] == [
            (int(p), 0, new_records)
        ]
    finally:
        reader.stop()
