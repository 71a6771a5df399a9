"""The batch layer: Spark ML pipeline on the 4,470 sample songs, exported as a portable model."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from pyspark.ml import PipelineModel

from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import create_tables, make_engine, model_versions, songs
from emergify_stream.config import Settings
from emergify_stream.feature_table import BATCH_COLUMNS, FeatureTableSink
from emergify_stream.model_registry import ModelRegistry, assign_clusters
from emergify_stream.model_training import ModelTrainer, catalog_frame, load_catalog

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
    assert trainer.start("again") == "already-running"
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
    portable = assign_clusters(model, catalog[list(AUDIO_FEATURES)].to_numpy())
    assert len(predicted) == 4470
    assert np.array_equal(predicted.loc[catalog["track_id"]].to_numpy(), portable)
    # ... and every song in the feature table carries that cluster and version.
    assert all(stored[t] == (int(c), 1) for t, c in zip(catalog["track_id"], portable, strict=True))
