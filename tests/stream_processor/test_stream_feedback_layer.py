"""The feedback query end to end: feedback topic -> Spark SQL -> listener tables, exactly once,
with a listener-change event; and each cleaning rule on its own, on a static frame."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka_io import read_topic
from testkit import wait_for

from emergify_cli.broker import EmbeddedBroker, create_topics
from emergify_contracts.events import DeadLetter
from emergify_contracts.listener import FeedbackEvent, ListenerChange, listener_feedback
from emergify_contracts.tables import create_tables, make_engine
from emergify_stream.config import Settings
from emergify_stream.publisher import EventPublisher
from emergify_stream.speed.feedback_layer import FeedbackLayer, clean_feedback
from emergify_stream.speed.feedback_sink import FeedbackSink

TRACK = "70kFiCsoYnJxMgIZ82WQmj"


def good() -> dict:
    return json.loads(
        FeedbackEvent(listener_id="spotify:a", track_id=TRACK, signal="like").model_dump_json()
    )


@pytest.mark.spark
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_id": "xyz"}, "event_id must be 32 hex digits"),
        ({"listener_id": "a b"}, "listener_id is missing or malformed"),
        ({"listener_id": None}, "listener_id is missing or malformed"),
        ({"signal": "love"}, "signal 'love' is not a feedback signal"),
        ({"signal": None}, "signal '' is not a feedback signal"),
        ({"signal": "erase"}, "erase carries no track_id"),
        ({"track_id": "short"}, "track_id is missing or not a 22-character base62 Spotify id"),
        ({"track_id": None}, "track_id is missing or not a 22-character base62 Spotify id"),
        ({"at": "yesterday"}, "at 'yesterday' is not an ISO 8601 timestamp"),
        ({}, None),
        ("{not json", "the value is not a FeedbackEvent: malformed JSON"),
        ("[1, 2]", "the value is not a FeedbackEvent: malformed JSON"),
    ],
)
def test_each_cleaning_rule(spark, change: dict | str, reason: str | None) -> None:
    value = change if isinstance(change, str) else json.dumps({**good(), **change})
    frame = spark.createDataFrame(
        [("k", value, "t", 0, 1, datetime.now(UTC))],
        "key string, value string, topic string, partition int, offset long, timestamp timestamp",
    )
    (row,) = clean_feedback(frame).collect()
    assert row["reject_reason"] == reason


@pytest.mark.spark
def test_feedback_reaches_the_listener_tables_once(
    spark, broker: EmbeddedBroker, database_url: str, tmp_path: Path, producer
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        feedback_topic=f"feedback.{suffix}",
        songs_dlq_topic=f"dlq.{suffix}",
        listener_changes_topic=f"listeners.{suffix}",
        database_url=database_url,
        checkpoint_dir=str(tmp_path / "checkpoint"),
        trigger_interval_seconds=0.5,
    )
    create_topics(
        broker.bootstrap,
        [settings.feedback_topic, settings.songs_dlq_topic, settings.listener_changes_topic],
        3,
    )
    engine = make_engine(database_url)
    create_tables(engine)
    publisher = EventPublisher(
        broker.bootstrap,
        settings.songs_dlq_topic,
        settings.catalog_changes_topic,
        settings.models_topic,
        settings.listener_changes_topic,
    )
    events = [
        FeedbackEvent(listener_id=f"spotify:l{i % 7}", track_id=TRACK, signal="like")
        for i in range(300)
    ]
    erase = FeedbackEvent(listener_id="spotify:l0", track_id=None, signal="erase")
    after = FeedbackEvent(listener_id="spotify:l0", track_id=TRACK, signal="dislike")
    records = [(e.listener_id.encode(), e.model_dump_json().encode()) for e in events]
    layer = FeedbackLayer(spark, settings, FeedbackSink(engine), publisher)
    layer.start()
    try:
        producer(broker.bootstrap, settings.feedback_topic, records[:150])
        producer(broker.bootstrap, settings.feedback_topic, [(b"x", b"{not json")])
        producer(broker.bootstrap, settings.feedback_topic, records[150:])
        producer(
            broker.bootstrap,
            settings.feedback_topic,
            [(e.listener_id.encode(), e.model_dump_json().encode()) for e in (erase, after)],
        )

        def stored() -> dict[str, list[str]]:
            assert layer.query.exception() is None, layer.query.exception()
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(listener_feedback.c.listener_id, listener_feedback.c.signal)
                ).all()
            out: dict[str, list[str]] = {}
            for listener, signal in rows:
                out.setdefault(listener, []).append(signal)
            return out

        expected_l1 = sum(1 for e in events if e.listener_id == "spotify:l1")
        wait_for(
            lambda: (
                stored().get("spotify:l0") == ["dislike"]
                and len(stored().get("spotify:l1", [])) == expected_l1
            ),
            what="every feedback event applied, the erase included",
            timeout=120,
        )
        wait_for(
            lambda: len(read_topic(broker.bootstrap, settings.songs_dlq_topic)) == 1,
            what="DLQ",
            timeout=120,
        )
    finally:
        layer.stop()
        publisher.close()
    assert sum(len(v) for v in stored().values()) == 1 + sum(
        1 for e in events if e.listener_id != "spotify:l0"
    )
    (letter,) = [
        DeadLetter.model_validate_json(v)
        for v in read_topic(broker.bootstrap, settings.songs_dlq_topic)
    ]
    assert "malformed JSON" in letter.reason
    changes = [
        ListenerChange.model_validate_json(v)
        for v in read_topic(broker.bootstrap, settings.listener_changes_topic)
    ]
    assert {lid for c in changes for lid in c.listener_ids} == {f"spotify:l{i}" for i in range(7)}
    assert [c.version for c in changes] == sorted(c.version for c in changes)


@pytest.mark.spark
def test_a_dead_feedback_query_is_started_again_from_its_checkpoint(
    spark, broker: EmbeddedBroker, sqlite_url: str, tmp_path: Path, producer
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        feedback_topic=f"feedback.{suffix}",
        database_url=sqlite_url,
        checkpoint_dir=str(tmp_path / "checkpoint"),
        trigger_interval_seconds=0.5,
    )
    create_topics(broker.bootstrap, [settings.feedback_topic], 3)
    engine = make_engine(sqlite_url)
    create_tables(engine)
    layer = FeedbackLayer(spark, settings, FeedbackSink(engine), publisher=None)

    def send(n: int) -> None:
        events = [
            FeedbackEvent(listener_id=f"spotify:r{i}", track_id=TRACK, signal="skip")
            for i in range(n)
        ]
        records = [(e.listener_id.encode(), e.model_dump_json().encode()) for e in events]
        producer(broker.bootstrap, settings.feedback_topic, records)

    def rows() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(listener_feedback)).scalar()

    layer.start()
    try:
        send(40)
        wait_for(lambda: rows() == 40, what="the first events", timeout=120)
        first = layer.query
        first.stop()  # the query dies
        assert layer.ensure_running()  # it had to start it again
        assert layer.query is not first and layer.query.isActive
        assert not layer.ensure_running()  # running: nothing to do
        send(25)
        wait_for(lambda: rows() == 65, what="the events after the restart", timeout=120)
    finally:
        layer.stop()
    assert not layer.ensure_running()  # stopped on purpose: stays stopped
    assert not layer.query.isActive
    assert rows() == 65
