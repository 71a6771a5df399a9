"""The speed layer end to end: songs topic -> Spark -> feature table, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka_io import read_topic
from testkit import wait_for

from emergify_cli.broker import EmbeddedBroker, create_topics
from emergify_contracts.events import CatalogChange, DeadLetter, SongEvent
from emergify_contracts.song import RowError, Song, detect_layout, row_to_song
from emergify_contracts.tables import create_tables, make_engine, songs, stream_batches
from emergify_stream.config import Settings
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.publisher import EventPublisher
from emergify_stream.speed.feature_table import FeatureTableSink
from emergify_stream.speed.speed_layer import SpeedLayer


def speed_settings(
    tmp_path: Path, broker: EmbeddedBroker, database_url: str, **extra: object
) -> Settings:
    """A speed layer's settings: topics named for this test, its own checkpoint."""
    suffix = tmp_path.name[-12:].replace("_", "")
    return Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        songs_topic=f"songs.{suffix}",
        songs_dlq_topic=f"dlq.{suffix}",
        catalog_changes_topic=f"catalog.{suffix}",
        models_topic=f"models.{suffix}",
        database_url=database_url,
        checkpoint_dir=str(tmp_path / "checkpoint"),
        trigger_interval_seconds=0.5,
        **extra,  # type: ignore[arg-type]
    )


def load_songs(path: Path) -> list[Song]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        layout = detect_layout(list(reader.fieldnames or []))
        out = []
        for row in reader:
            try:
                out.append(row_to_song(row, layout))
            except RowError:
                continue
        return out


@pytest.mark.spark
def test_speed_layer_materialises_songs_and_dead_letters(
    spark, broker: EmbeddedBroker, database_url: str, sample_csv: Path, tmp_path: Path, producer
) -> None:
    settings = speed_settings(tmp_path, broker, database_url)
    create_topics(broker.bootstrap, settings.topics(), 3)
    engine = make_engine(database_url)
    create_tables(engine)
    publisher = EventPublisher(
        broker.bootstrap,
        settings.songs_dlq_topic,
        settings.catalog_changes_topic,
        settings.models_topic,
    )
    layer = SpeedLayer(spark, settings, FeatureTableSink(engine, ModelRegistry(engine), publisher))

    catalog = load_songs(sample_csv)
    first = datetime(2025, 1, 1, tzinfo=UTC)
    events = [
        (
            s.track_id.encode(),
            SongEvent(upload_id="u1", source="csv:exportify", ingested_at=first, song=s)
            .model_dump_json()
            .encode(),
        )
        for s in catalog
    ]
    resent = catalog[0].model_copy(update={"name": "  Re-sent name  "})
    newer = SongEvent(
        upload_id="u2", source="json", ingested_at=first + timedelta(hours=1), song=resent
    )
    bad_feature = json.loads(events[1][1])
    bad_feature["song"]["danceability"] = 1.7
    poison = [
        (b"x", b"{not json"),
        (b"y", json.dumps(bad_feature).encode()),
        (
            b"z",
            json.dumps(
                {"upload_id": "u3", "source": "json", "song": {"track_id": "short"}}
            ).encode(),
        ),
    ]

    query = layer.start()
    try:
        producer(broker.bootstrap, settings.songs_topic, events[:2000])
        producer(
            broker.bootstrap,
            settings.songs_topic,
            [*poison, (resent.track_id.encode(), newer.model_dump_json().encode())],
        )
        producer(broker.bootstrap, settings.songs_topic, events[2000:])

        def count() -> int:
            assert query.exception() is None, query.exception()
            with engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(songs)).scalar_one()

        wait_for(lambda: count() == len(catalog), 120, "every song in the feature table", 0.5)
        wait_for(
            lambda: len(read_topic(broker.bootstrap, settings.songs_dlq_topic)) >= 3,
            120,
            "the dead letters",
            0.5,
        )
    finally:
        layer.stop()
        publisher.close()

    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.select(songs.c.track_id))]
        name = conn.execute(
            sa.select(songs.c.name).where(songs.c.track_id == resent.track_id)
        ).scalar_one()
        batches = conn.execute(sa.select(sa.func.count()).select_from(stream_batches)).scalar_one()
    assert sorted(ids) == sorted({s.track_id for s in catalog})
    assert name == "Re-sent name"  # trimmed, and the newer version won over the older one
    assert batches >= 1

    letters = [
        DeadLetter.model_validate_json(v)
        for v in read_topic(broker.bootstrap, settings.songs_dlq_topic)
    ]
    reasons = {d.key: d.reason for d in letters}
    assert len(letters) == 3
    assert "malformed JSON" in reasons["x"]
    assert reasons["y"] == "danceability 1.7 is outside [0, 1]"
    assert "track_id 'short' is not a 22-character base62 Spotify id" in reasons["z"]
    assert "name is required" in reasons["z"]

    changes = [
        CatalogChange.model_validate_json(v)
        for v in read_topic(broker.bootstrap, settings.catalog_changes_topic)
    ]
    assert {i for c in changes for i in c.upserted_ids} == set(ids)
    assert [c.table_version for c in changes] == sorted({c.table_version for c in changes})
    assert changes[-1].songs == len(catalog)
