"""The feature-table sink: exactly-once per batch id, latest version wins, clusters assigned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa
from kafka_io import read_topic

from emergify_cli.broker import EmbeddedBroker
from emergify_contracts.events import CATALOG_CHANGE_MAX_NAMES, CatalogChange
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import (
    artist_profiles,
    create_tables,
    make_engine,
    songs,
    stream_batches,
)
from emergify_stream.artist_rows import table_frame
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.publisher import EventPublisher
from emergify_stream.speed.feature_table import BATCH_COLUMNS, FeatureTableSink

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def song_row(i: int, name: str = "", ingested_at: datetime = T0, offset: int = 0) -> dict:
    row = {
        "track_id": f"{i:022d}",
        "name": name or f"Song {i}",
        "album": None,
        "release_date": "2024",
        "upload_id": "u",
        "source": "json",
        "artists": [f"Artist {i % 7}"],
        "artist_ids": [],
        "genres": ["indie"],
        "duration_ms": 200_000,
        "popularity": i % 100,
        "key": None,
        "mode": 1,
        "time_signature": 4,
        "kafka_partition": 0,
        "explicit": None,
        "danceability": (i % 10) / 10,
        "energy": 0.5,
        "loudness": -8.0 + i % 5,
        "speechiness": 0.05,
        "acousticness": 0.2,
        "instrumentalness": 0.0,
        "liveness": 0.1,
        "valence": 0.4,
        "tempo": 100.0 + i,
        "ingested_at": pd.Timestamp(ingested_at).tz_convert(None),  # Spark hands UTC, naive
        "kafka_offset": offset or i,
    }
    assert set(row) == set(BATCH_COLUMNS)
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(BATCH_COLUMNS))


def table(engine: sa.Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.track_id: dict(r._mapping) for r in conn.execute(sa.select(songs))}


def test_replayed_batch_writes_nothing_and_newest_version_wins(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    sink = FeatureTableSink(engine, ModelRegistry(engine))

    first = sink.write("q1", 0, frame([song_row(i) for i in range(10)]))
    assert first.applied and first.table_version == 1 and first.songs == 10
    before = table(engine)

    replay = sink.write("q1", 0, frame([song_row(i, name="changed") for i in range(10)]))
    assert not replay.applied and replay.table_version == 1
    assert table(engine) == before  # nothing written twice, nothing changed
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(stream_batches)).scalar() == 1

    newer = song_row(3, name="newer", ingested_at=T0 + timedelta(minutes=5), offset=100)
    older = song_row(4, name="older", ingested_at=T0 - timedelta(minutes=5), offset=101)
    second = sink.write("q1", 1, frame([newer, older, song_row(10)]))
    assert second.applied and second.table_version == 2 and second.songs == 11
    after = table(engine)
    assert after["0000000000000000000003"]["name"] == "newer"
    assert after["0000000000000000000004"]["name"] == "Song 4"  # older version ignored
    assert after["0000000000000000000004"]["table_version"] == 1
    assert after["0000000000000000000010"]["table_version"] == 2
    assert after["0000000000000000000003"]["artists"] == ["Artist 3"]

    # A new checkpoint (new query name) restarts batch ids at 0: still applied, next version.
    third = sink.write("q2", 0, frame([song_row(11)]))
    assert third.applied and third.table_version == 3 and third.songs == 12

    # Empty batches commit a marker without bumping the version.
    empty = sink.write("q2", 1, frame([]))
    assert empty.applied and empty.table_version == 3 and empty.upserted_ids == []


def test_songs_get_the_current_models_cluster(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    registry = ModelRegistry(engine)
    sink = FeatureTableSink(engine, registry)
    sink.write("q", 0, frame([song_row(i) for i in range(20)]))
    assert {r["cluster"] for r in table(engine).values()} == {None}

    rng = np.random.default_rng(1)
    model = PortableModel(
        version=1,
        trained_at=T0,
        means=[0.5] * 9,
        scales=[1.0] * 9,
        components=rng.normal(size=(9, 3)).tolist(),
        centroids=rng.normal(size=(4, 3)).tolist(),
        k=4,
        silhouette=0.3,
        songs=20,
    )
    assert registry.publish(model, {"silhouette": {"4": 0.3}}, None) == 20
    sink.write("q", 1, frame([song_row(i) for i in range(20, 30)]))
    rows = table(engine)
    features = np.array([[rows[t][f] for f in AUDIO_FEATURES] for t in sorted(rows)])
    expected = model.assign(features)
    assert [rows[t]["cluster"] for t in sorted(rows)] == expected.tolist()
    assert {r["model_version"] for r in rows.values()} == {1}
    assert registry.current().version == 1


def test_a_batch_too_big_to_name_its_songs_is_still_announced(
    sqlite_url: str, broker: EmbeddedBroker, new_topic
) -> None:
    """A micro-batch of more songs than one record can name (its ids alone would pass the
    broker's 1 MB record limit) is announced unlisted: consumers read its rows by table
    version. Before, its event was refused and only the recommender's poll caught up."""
    engine = make_engine(sqlite_url)
    create_tables(engine)
    topic = new_topic(3)
    publisher = EventPublisher(broker.bootstrap, "unused.dlq", topic, "unused.models")
    sink = FeatureTableSink(engine, ModelRegistry(engine), publisher)
    try:
        big = CATALOG_CHANGE_MAX_NAMES + 25_000  # ~1.1 MB of ids
        assert sink.write("q", 0, frame([song_row(i) for i in range(big)])).applied
        again = song_row(0, name="again", ingested_at=T0 + timedelta(minutes=5), offset=big + 1)
        assert sink.write("q", 1, frame([song_row(big), again])).applied
    finally:
        publisher.close()

    events = [CatalogChange.model_validate_json(v) for v in read_topic(broker.bootstrap, topic)]
    first, second = sorted(events, key=lambda e: e.table_version)
    assert (first.table_version, first.listed, first.upserted, first.songs) == (1, False, big, big)
    assert first.upserted_ids == [] and first.artists_changed == []
    assert (second.table_version, second.listed, second.upserted) == (2, True, 2)
    assert sorted(second.upserted_ids) == [f"{0:022d}", f"{big:022d}"]
    # What a consumer reads for the unlisted batch: the songs whose last write it was.
    with engine.connect() as conn:
        rows = conn.execute(sa.select(songs.c.track_id).where(songs.c.table_version == 1))
        assert len(rows.all()) == big - 1  # song 0 was written again by batch 2


def test_reading_the_table_in_chunks_leaves_the_transaction_usable(database_url: str) -> None:
    """The batch layer reads songs in chunks and then, in the same transaction, replaces the
    artist profiles. The chunked read must not leave the connection streaming through a
    PostgreSQL server-side cursor, which refuses a DELETE (CI caught it: every retrain on
    PostgreSQL failed)."""
    engine = make_engine(database_url)
    create_tables(engine)
    FeatureTableSink(engine, ModelRegistry(engine)).write(
        "q", 0, frame([song_row(i) for i in range(7)])
    )
    with engine.begin() as conn:
        assert len(table_frame(conn, sa.true())) == 7
        conn.execute(artist_profiles.delete().where(artist_profiles.c.model_version == 1))
        assert conn.execute(sa.select(sa.func.count()).select_from(songs)).scalar() == 7
