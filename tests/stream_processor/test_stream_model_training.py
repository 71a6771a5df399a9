"""The batch layer: Spark ML pipeline on the 4,470 sample songs, exported as a portable model."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from pyspark.ml import PipelineModel

from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import create_tables, make_engine, model_versions, songs
from emergify_stream.batch.model_training import (
    ModelTrainer,
    catalog_frame,
    fit_model,
    load_catalog,
)
from emergify_stream.config import Settings
from emergify_stream.model_registry import ModelRegistry, reassign_clusters
from emergify_stream.speed.feature_table import BATCH_COLUMNS, FeatureTableSink

from .test_stream_feature_table import frame, song_row, table
from .test_stream_speed_layer import load_songs


def catalog_batch(path: Path) -> pd.DataFrame:
    rows = []
    for i, s in enumerate(load_songs(path)):
        row = s.model_dump()
        row.update(
            upload_id="u",
            source="csv:exportify",
            kafka_partition=0,
            kafka_offset=i,
            ingested_at=pd.Timestamp(datetime(2025, 1, 1, tzinfo=UTC)).tz_convert(None),
        )
        rows.append(row)
    return pd.DataFrame(rows)[list(BATCH_COLUMNS)]


@pytest.mark.spark
def test_training_picks_k_by_silhouette_and_portable_model_matches_spark(
    spark, sqlite_url: str, sample_csv: Path, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url)
    create_tables(engine)
    registry = ModelRegistry(engine)
    batch = catalog_batch(sample_csv)
    FeatureTableSink(engine, registry).write("seed", 0, batch)
    settings = Settings(
        database_url=sqlite_url,
        models_dir=str(tmp_path / "models"),
        lake_uri=str(tmp_path / "lake"),  # no master dataset: the feature table is the source
        k_max=8,
    )
    trainer = ModelTrainer(lambda: spark, engine, settings, registry)

    assert trainer.should_retrain(len(batch))
    assert trainer.start("test") == "started"
    trainer.wait(600)
    assert trainer.last_error is None
    model = trainer.last_model
    assert model is not None and model.version == 1
    assert settings.k_min <= model.k <= settings.k_max
    assert model.songs == len(batch) == 4470
    assert not trainer.should_retrain(len(batch))  # grown by less than 25 %
    assert trainer.should_retrain(int(len(batch) * 1.25) + 1)

    with engine.connect() as conn:
        row = conn.execute(sa.select(model_versions)).one()
        stored = {r.track_id: (r.cluster, r.model_version) for r in conn.execute(sa.select(songs))}
    scores = row.metrics["silhouette_by_k"]
    assert set(scores) == {str(k) for k in range(settings.k_min, settings.k_max + 1)}
    assert row.silhouette == max(scores.values()) and row.k == model.k
    assert row.metrics["inertia_by_k"] and len(row.metrics["explained_variance"]) == 5
    assert row.metrics["source"] == "feature-table" and row.metrics["k_range"] == [4, 8]

    # The saved Spark pipeline and the numpy arithmetic agree on every sample song.
    catalog = load_catalog(engine)
    spark_model = PipelineModel.load(row.spark_model_path)
    predicted = (
        spark_model.transform(catalog_frame(spark, catalog))
        .select("track_id", "cluster")
        .toPandas()
        .set_index("track_id")["cluster"]
    )
    portable = model.assign(catalog[list(AUDIO_FEATURES)].to_numpy())
    assert len(predicted) == 4470
    assert np.array_equal(predicted.loc[catalog["track_id"]].to_numpy(), portable)
    # ... and every song in the feature table carries that cluster and version.
    assert all(stored[t] == (int(c), 1) for t, c in zip(catalog["track_id"], portable, strict=True))


def portable(version: int, centroids: list[list[float]]) -> PortableModel:
    return PortableModel(
        version=version,
        trained_at=datetime(2025, 1, 1, tzinfo=UTC),
        means=[0.5, 0.5, -8, 0.05, 0.2, 0, 0.1, 0.4, 110],
        scales=[0.3, 1, 2, 1, 1, 1, 1, 1, 10],
        components=np.eye(9)[:, :2].tolist(),  # p = the scaled danceability and energy
        centroids=centroids,
        k=len(centroids),
        silhouette=0.3,
        songs=50,
    )


def test_model_assign_takes_the_first_of_equally_near_centroids() -> None:
    rng = np.random.default_rng(3)
    model = portable(1, rng.normal(size=(24, 2)).tolist())
    x = rng.normal(loc=[0.5, 0.5, -8, 0, 0, 0, 0, 0.4, 110], size=(5000, 9))
    p = (x - np.asarray(model.means)) / np.asarray(model.scales) @ np.asarray(model.components)
    brute = ((p[:, None, :] - np.asarray(model.centroids)[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert np.array_equal(model.assign(x), brute)

    # A song exactly halfway between centroids 1 and 2 (and the same centroid twice) goes to
    # the lower index, as numpy's argmin and Spark's KMeans.predict do.
    tie = portable(1, [[5.0, 5.0], [-1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    halfway = np.array(
        [[0.5, 0.5, -8, 0.05, 0.2, 0, 0.1, 0.4, 110], [0.8, 0.5, -8, 0, 0, 0, 0, 0, 0]]
    )
    assert tie.assign(halfway).tolist() == [1, 2]


def test_reassign_walks_the_table_in_chunks_and_publish_rolls_back_on_failure(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    registry = ModelRegistry(engine)
    FeatureTableSink(engine, registry).write("q", 0, frame([song_row(i) for i in range(50)]))
    first = portable(1, [[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with engine.begin() as conn:
        assert reassign_clusters(conn, first, chunk_rows=7) == 50  # 8 chunks, the last short
    rows = table(engine)
    features = np.array([[rows[t][f] for f in AUDIO_FEATURES] for t in sorted(rows)])
    assert [rows[t]["cluster"] for t in sorted(rows)] == first.assign(features).tolist()
    assert {r["model_version"] for r in rows.values()} == {1}

    # The batch layer waits for the Spark model's save inside the transaction: a failed save
    # publishes nothing, and every song keeps its cluster and version.
    second = portable(2, [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])

    def failed_save() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        registry.publish(second, {}, "/nowhere/v2", before_commit=failed_save)
    assert table(engine) == rows
    assert registry.current() is None

    assert registry.publish(second, {}, None, before_commit=lambda: None) == 50
    after = table(engine)
    assert [after[t]["cluster"] for t in sorted(after)] == second.assign(features).tolist()
    assert {r["model_version"] for r in after.values()} == {2}
    assert registry.current().version == 2


@pytest.mark.spark
def test_k_search_in_parallel_threads_scores_like_one_at_a_time(
    spark, sample_csv: Path, tmp_path: Path
) -> None:
    songs_frame = pd.DataFrame([s.model_dump() for s in load_songs(sample_csv)])
    catalog = songs_frame[["track_id", *AUDIO_FEATURES]].head(1500)
    runs = [
        fit_model(spark, catalog, Settings(k_max=6, k_candidates=3, k_search_threads=t), 1)
        for t in (1, 2)
    ]
    one, two = (r.metrics["silhouette_by_k"] for r in runs)
    assert set(one) == {"4", "5", "6"} and one == two
    assert runs[0].model.centroids == runs[1].model.centroids


@pytest.mark.spark
def test_songs_arriving_during_a_run_and_a_request_during_a_run_each_lead_to_a_follow_up(
    spark, sqlite_url: str, sample_csv: Path, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url)
    create_tables(engine)
    registry = ModelRegistry(engine)
    sink = FeatureTableSink(engine, registry)
    catalog = catalog_batch(sample_csv)
    first, arriving = catalog.iloc[:800], catalog.iloc[800:1100]  # +37.5 %: the growth rule
    sink.write("seed", 0, first)
    settings = Settings(
        database_url=sqlite_url,
        models_dir=str(tmp_path / "models"),
        lake_uri=str(tmp_path / "lake"),  # no master dataset: the feature table is the source
        k_max=6,
    )
    trainer = ModelTrainer(lambda: spark, engine, settings, registry)

    assert trainer.start("first model") == "started"
    sink.write("seed", 1, arriving)
    assert trainer.running  # the songs arrived while the first run was under way
    trainer.wait(900)
    assert trainer.last_error is None and not trainer.running
    assert trainer.runs == 2  # the follow-up, with no request
    assert registry.summary()["songs"] == trainer.last_model.songs == 1100
    with engine.connect() as conn:
        versions = {r.model_version for r in conn.execute(sa.select(songs.c.model_version))}
    assert versions == {2}

    assert trainer.start("again") == "started"
    assert trainer.start("while it runs") == "queued" and trainer.queued
    assert trainer.start("and once more") == "queued"  # one follow-up covers both
    trainer.wait(900)
    assert trainer.last_error is None and not trainer.running and not trainer.queued
    assert trainer.runs == 4 and registry.summary()["version"] == 4
    engine.dispose()
