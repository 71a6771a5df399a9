"""The FAIR scheduler's pools: streaming micro-batches in ``speed``, training runs in ``batch``.

Which pool a job ran in is read from Spark's own status store (the record the UI would
show): each stage Spark submitted keeps the pool the scheduler put it in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pyspark.sql import SparkSession
from testkit import wait_for

from emergify_cli.broker import EmbeddedBroker, create_topics
from emergify_contracts.events import SongEvent
from emergify_contracts.tables import create_tables, make_engine, songs
from emergify_stream.batch.model_training import ModelTrainer
from emergify_stream.config import Settings
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.scheduler_pools import BATCH_POOL, POOL_PROPERTY, SPEED_POOL
from emergify_stream.speed.feature_table import FeatureTableSink
from emergify_stream.speed.speed_layer import SpeedLayer

from .test_stream_model_training import catalog_batch
from .test_stream_speed_layer import load_songs, speed_settings


def submitted_stages(spark: SparkSession) -> list[Any]:
    """Every stage Spark submitted so far (JVM ``StageData``); skipped ones never reach a
    pool."""
    sc = spark.sparkContext
    jvm = sc._jvm
    assert jvm is not None
    store = sc._jsc.sc().statusStore()
    no_quantiles, any_task = (
        sc._gateway.new_array(jvm.double, 0),
        jvm.java.util.Collections.emptyList(),
    )
    stages = store.stageList(None, False, False, no_quantiles, any_task)
    out = [stages.apply(i) for i in range(stages.size())]
    return [s for s in out if str(s.status()) != "SKIPPED"]


def job_stage_ids(spark: SparkSession, group: str) -> set[int]:
    """The stage ids of the jobs in job group ``group``."""
    jobs = spark.sparkContext._jsc.sc().statusStore().jobsList(None)
    ids: set[int] = set()
    for i in range(jobs.size()):
        job = jobs.apply(i)
        if job.jobGroup().isDefined() and job.jobGroup().get() == group:
            stage_ids = job.stageIds()
            ids |= {int(stage_ids.apply(j)) for j in range(stage_ids.size())}
    return ids


@pytest.mark.spark
def test_the_session_schedules_fairly_with_a_speed_and_a_batch_pool(spark) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    sc = spark.sparkContext
    assert sc.getConf().get("spark.scheduler.mode") == "FAIR"
    pools = sc._jsc.sc()
    speed, batch = pools.getPoolForName(SPEED_POOL), pools.getPoolForName(BATCH_POOL)
    assert speed.isDefined() and batch.isDefined()  # read from the allocation file
    assert speed.get().weight() == settings.speed_pool_weight
    assert speed.get().minShare() == settings.speed_pool_min_share
    assert (batch.get().weight(), batch.get().minShare()) == (1, 0)


@pytest.mark.spark
def test_a_training_run_submits_every_job_to_the_batch_pool(
    spark, sqlite_url: str, sample_csv: Path, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_url)
    create_tables(engine)
    registry = ModelRegistry(engine)
    FeatureTableSink(engine, registry).write("seed", 0, catalog_batch(sample_csv)[:600])
    settings = Settings(
        database_url=sqlite_url,
        models_dir=str(tmp_path / "models"),
        lake_uri=str(tmp_path / "lake"),  # the feature table is the source
        k_max=6,
        k_candidates=2,
    )
    before = max((s.stageId() for s in submitted_stages(spark)), default=-1)
    trainer = ModelTrainer(lambda: spark, engine, settings, registry)
    assert trainer.start("test") == "started"
    trainer.wait(600)
    assert trainer.last_error is None and trainer.last_model is not None

    pools = {s.schedulingPool() for s in submitted_stages(spark) if s.stageId() > before}
    # The k search's and the save's own threads included; a query another test left running
    # would be in the speed pool.
    assert pools - {SPEED_POOL} == {BATCH_POOL}
    assert spark.sparkContext.getLocalProperty(POOL_PROPERTY) is None  # the caller's thread
    engine.dispose()


@pytest.mark.spark
def test_streaming_micro_batches_run_in_the_speed_pool(
    spark, broker: EmbeddedBroker, sqlite_url: str, sample_csv: Path, tmp_path: Path, producer
) -> None:
    settings = speed_settings(tmp_path, broker, sqlite_url, broker_watch_interval_seconds=0)
    create_topics(broker.bootstrap, settings.topics(), 1)
    engine = make_engine(sqlite_url)
    create_tables(engine)
    layer = SpeedLayer(spark, settings, FeatureTableSink(engine, ModelRegistry(engine)))
    at = datetime(2025, 1, 1, tzinfo=UTC)
    events = [
        (s.track_id.encode(), SongEvent(upload_id="u", source="json", ingested_at=at, song=s))
        for s in load_songs(sample_csv)[:20]
    ]
    query = layer.start()
    try:
        assert spark.sparkContext.getLocalProperty(POOL_PROPERTY) is None  # restored
        producer(
            broker.bootstrap,
            settings.songs_topic,
            [(k, e.model_dump_json().encode()) for k, e in events],
        )

        def stored() -> int:
            assert query.exception() is None, query.exception()
            with engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(songs)).scalar_one()

        wait_for(lambda: stored() == len(events), 120, "the songs in the feature table", 0.5)
        # Spark runs each micro-batch's jobs (foreachBatch's toPandas among them) in the
        # query's run id as job group.
        ids = job_stage_ids(spark, str(query.runId))
    finally:
        layer.stop()
        engine.dispose()
    pools = {s.schedulingPool() for s in submitted_stages(spark) if s.stageId() in ids}
    assert pools == {SPEED_POOL}
