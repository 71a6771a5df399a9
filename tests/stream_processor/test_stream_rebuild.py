"""The batch layer on the master dataset: rebuild the feature table from the lake alone,
train on the lake, the speed layer between retrains, and the retrain schedule."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from kafka_io import read_topic

from emergify_cli.broker import EmbeddedBroker, create_topics
from emergify_contracts.events import CatalogChange, ModelPublished, SongEvent
from emergify_contracts.song import AUDIO_FEATURES, Song
from emergify_contracts.tables import (
    create_tables,
    make_engine,
    model_versions,
    songs,
    stream_batches,
)
from emergify_ingest.master_dataset import MasterDataset, latest_versions, read_master_dataset
from emergify_stream.batch.model_training import (
    ModelTrainer,
    RetrainSchedule,
    k_candidates,
    k_range,
)
from emergify_stream.batch.rebuild import LAKE_PARTITION, EmptyMasterDataset, rebuild
from emergify_stream.config import Settings
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.publisher import EventPublisher
from emergify_stream.speed.feature_table import FeatureTableSink
from emergify_stream.speed.speed_layer import SpeedLayer

from .test_stream_model_training import catalog_batch
from .test_stream_speed_layer import load_songs, wait_for

T0 = datetime(2025, 5, 1, 9, 30, tzinfo=UTC)
N_SONGS = 1500


def settings_for(tmp_path: Path, database_url: str, bootstrap: str, **extra) -> Settings:
    suffix = tmp_path.name[-12:].replace("_", "")
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        lake_uri=str(tmp_path / "lake"),
        models_dir=str(tmp_path / "models"),
        checkpoint_dir=str(tmp_path / "checkpoint"),
        kafka_bootstrap_servers=bootstrap,
        songs_topic=f"songs.{suffix}",
        songs_dlq_topic=f"dlq.{suffix}",
        catalog_changes_topic=f"catalog.{suffix}",
        models_topic=f"models.{suffix}",
        **extra,
    )


def write_lake(lake: Path, catalog: list[Song]) -> tuple[str, str]:
    """Three uploads through ingest's own writer; returns (id re-sent in a later upload, id
    written twice within one chunk)."""
    dataset = MasterDataset(str(lake))
    dataset.prepare()
    first, rest = catalog[:1000], catalog[1000:]
    resent, twice = first[0], first[1]
    # Upload 1, two chunks; the second chunk repeats `twice` at a later row: that row wins.
    dataset.append(first[:600], range(600), upload_id="u1", chunk=0, source="csv", ingested_at=T0)
    dataset.append(
        [*first[600:], twice.model_copy(update={"name": "Twice, later row"})],
        range(600, 1001),
        upload_id="u1",
        chunk=1,
        source="csv",
        ingested_at=T0,
    )
    # Upload 2, a day later: the rest, and a new version of `resent` (name and features).
    changed = resent.model_copy(update={"name": "Re-sent, newer", "energy": 0.123456})
    dataset.append(
        [*rest, changed],
        range(len(rest) + 1),
        upload_id="u2",
        chunk=0,
        source="json",
        ingested_at=T0 + timedelta(days=1),
    )
    # An older upload with a different name for `resent`: its version must lose.
    old = resent.model_copy(update={"name": "Re-sent, oldest"})
    dataset.append(
        [old], [0], upload_id="u0", chunk=0, source="json", ingested_at=T0 - timedelta(days=3)
    )
    # A file the writer had not finished (not yet renamed): never read.
    (lake / "songs" / f"date={T0.date()}" / "u9-00000.parquet.tmp").write_bytes(b"partial")
    return resent.track_id, twice.track_id


def feature_table(engine: sa.Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.track_id: dict(r._mapping) for r in conn.execute(sa.select(songs))}


@pytest.mark.spark
def test_rebuild_reproduces_the_lakes_latest_versions_and_publishes_a_model(
    spark, broker: EmbeddedBroker, database_url: str, sample_csv: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, database_url, broker.bootstrap, rebuild_chunk_rows=400)
    create_topics(broker.bootstrap, settings.topics(), 1)
    catalog = load_songs(sample_csv)[:N_SONGS]
    resent, twice = write_lake(tmp_path / "lake", catalog)
    expected = {
        r["track_id"]: r
        for r in latest_versions(read_master_dataset(settings.lake_uri)).to_pylist()
    }
    assert expected[resent]["name"] == "Re-sent, newer"  # ingest's own rule, as a reference
    assert expected[twice]["name"] == "Twice, later row"

    publisher = EventPublisher(
        broker.bootstrap,
        settings.songs_dlq_topic,
        settings.catalog_changes_topic,
        settings.models_topic,
    )
    try:
        report = rebuild(spark, settings, publisher)  # into an EMPTY database
    finally:
        publisher.close()

    engine = make_engine(database_url)
    table = feature_table(engine)
    assert report.songs == len(table) == len(expected) == N_SONGS
    assert report.chunks == 4 and report.table_version == 4
    assert set(table) == set(expected)
    for tid, want in expected.items():
        got = table[tid]
        assert got["name"] == want["name"]
        assert got["artists"] == want["artists"]
        assert [got[f] for f in AUDIO_FEATURES] == [want[f] for f in AUDIO_FEATURES]
        assert got["upload_id"] == want["upload_id"]
        assert got["kafka_partition"] == LAKE_PARTITION and got["kafka_offset"] == want["row"]
    assert table[resent]["name"] == "Re-sent, newer" and table[resent]["energy"] == 0.123456
    assert table[twice]["name"] == "Twice, later row"

    # A model trained on the lake is current, and every song carries its cluster.
    run = report.model
    assert run is not None and run.model.version == 1 and run.model.songs == N_SONGS
    with engine.connect() as conn:
        row = conn.execute(sa.select(model_versions)).one()
        markers = conn.execute(sa.select(stream_batches.c.query_name)).scalars().all()
    assert row.metrics["source"] == "master-dataset"
    assert row.metrics["songs"] == N_SONGS and row.metrics["k_range"] == [4, 12]
    assert set(row.metrics["silhouette_by_k"]) == {"4", "6", "8", "10", "12"}  # 6 at most
    ids = sorted(table)
    features = np.array([[table[t][f] for f in AUDIO_FEATURES] for t in ids])
    assert [table[t]["cluster"] for t in ids] == run.model.assign(features).tolist()
    assert {table[t]["model_version"] for t in ids} == {1}
    assert len(markers) == 4 and {m for m in markers} == {report.query_name}
    assert report.query_name.startswith("rebuild-")

    models = [
        ModelPublished.model_validate_json(v)
        for v in read_topic(broker.bootstrap, settings.models_topic)
    ]
    assert [(m.version, m.songs) for m in models] == [(1, N_SONGS)]
    changes = [
        CatalogChange.model_validate_json(v)
        for v in read_topic(broker.bootstrap, settings.catalog_changes_topic)
    ]
    assert {i for c in changes for i in c.upserted_ids} == set(expected)

    # Rebuilding again changes no song: the stored versions are not older than the lake's.
    again = rebuild(spark, settings, None, train=False)
    assert again.songs == N_SONGS and again.model is None
    assert feature_table(engine) == table
    engine.dispose()


@pytest.mark.spark
def test_rebuild_refuses_an_empty_lake(spark, sqlite_url: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, sqlite_url, "127.0.0.1:1")
    with pytest.raises(EmptyMasterDataset, match="missing or holds no file"):
        rebuild(spark, settings, None)


@pytest.mark.spark
def test_new_song_between_retrains_gets_the_current_models_cluster(
    spark, broker: EmbeddedBroker, sqlite_url: str, sample_csv: Path, tmp_path: Path, producer
) -> None:
    settings = settings_for(tmp_path, sqlite_url, broker.bootstrap, trigger_interval_seconds=0.5)
    create_topics(broker.bootstrap, settings.topics(), 3)
    catalog = load_songs(sample_csv)
    write_lake(tmp_path / "lake", catalog[:N_SONGS])
    report = rebuild(spark, settings, None)
    assert report.model is not None
    model = report.model.model

    engine = make_engine(sqlite_url)
    registry = ModelRegistry(engine)
    layer = SpeedLayer(spark, settings, FeatureTableSink(engine, registry))
    new = catalog[N_SONGS]  # not in the lake, not in the table
    event = SongEvent(
        upload_id="u-new", source="json", ingested_at=T0 + timedelta(days=2), song=new
    )
    query = layer.start()
    try:
        producer(
            broker.bootstrap,
            settings.songs_topic,
            [(new.track_id.encode(), event.model_dump_json().encode())],
        )

        def materialised() -> bool:
            assert query.exception() is None, query.exception()
            return new.track_id in feature_table(engine)

        wait_for(materialised, what="the new song in the feature table")
    finally:
        layer.stop()

    stored = feature_table(engine)[new.track_id]
    expected = model.assign(np.array([[getattr(new, f) for f in AUDIO_FEATURES]]))
    assert stored["cluster"] == int(expected[0]) and stored["model_version"] == model.version
    with engine.connect() as conn:  # no retrain happened
        assert conn.execute(sa.select(sa.func.count()).select_from(model_versions)).scalar() == 1
    engine.dispose()


def test_k_range_grows_with_the_catalog() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert k_range(4470, settings) == range(4, 13)
    assert k_range(20_000, settings) == range(4, 15)
    assert k_range(50_000, settings) == range(4, 23)
    assert k_range(1_000_000, settings) == range(4, 25)  # capped by k_max_cap
    assert k_range(8, settings) == range(4, 8)  # never more clusters than songs - 1
    assert k_candidates(range(4, 9), 6) == [4, 5, 6, 7, 8]
    assert k_candidates(range(4, 13), 6) == [4, 6, 8, 10, 12]
    assert k_candidates(range(4, 25), 6) == [4, 8, 12, 16, 20, 24]
    assert k_candidates(range(4, 24), 6) == [4, 8, 12, 16, 20, 23]  # the top is always tried
    assert k_range(10**6, Settings(_env_file=None, k_max=30)) == range(4, 31)  # type: ignore[call-arg]


@pytest.mark.spark
def test_schedule_retrains_and_falls_back_to_the_feature_table(
    spark, sqlite_url: str, sample_csv: Path, tmp_path: Path
) -> None:
    settings = settings_for(
        tmp_path, sqlite_url, "127.0.0.1:1", k_max=6, retrain_interval_seconds=1
    )
    engine = make_engine(sqlite_url)
    create_tables(engine)
    registry = ModelRegistry(engine)
    FeatureTableSink(engine, registry).write("seed", 0, catalog_batch(sample_csv).head(300))
    trainer = ModelTrainer(lambda: spark, engine, settings, registry)
    ready = {"now": False}
    schedule = RetrainSchedule(trainer, settings.retrain_interval_seconds, lambda: ready["now"])
    schedule.start()
    try:
        wait_for(lambda: schedule.ticks >= 2, what="two ticks")
        assert registry.current() is None  # not ready: skipped
        ready["now"] = True
        wait_for(
            lambda: (registry.summary() or {}).get("version", 0) >= 2, timeout=300, what="2 models"
        )
    finally:
        schedule.stop()
        trainer.wait(300)
    assert trainer.last_error is None
    with engine.connect() as conn:
        rows = conn.execute(sa.select(model_versions).order_by(model_versions.c.version)).all()
    assert [r.version for r in rows][:2] == [1, 2]
    for r in rows:
        assert r.songs == 300 and r.metrics["source"] == "feature-table"
        assert "missing or empty" in r.metrics["source_detail"]
    engine.dispose()


def test_cli_rebuild_says_when_the_lake_is_empty(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EMERGIFY_LAKE_URI": str(tmp_path / "no-lake"),
        "EMERGIFY_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "emergify_cli.main", "rebuild", "--no-publish"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "is missing or holds no file; nothing to rebuild from" in done.stderr
