"""Rebuild the feature table, and a model, from the master dataset alone; reconcile the table
with it after the broker lost records.

``python -m emergify_stream.batch.rebuild`` (or ``emergify rebuild``); run it while the
stream processor is stopped. Design: docs/stream-processor.md, "Rebuild".
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
import structlog
from kafka.errors import KafkaError
from pyspark.sql import DataFrame, SparkSession

from emergify_contracts.lake import known_empty, songs_location
from emergify_contracts.logs import configure_logging
from emergify_contracts.tables import create_tables, make_engine, songs
from emergify_stream.batch.artist_profiles import PROFILE_INPUT_COLUMNS
from emergify_stream.batch.master_dataset import latest_songs
from emergify_stream.batch.model_training import BatchRun, TrainingData, run_batch_layer
from emergify_stream.config import Settings, get_settings
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.publisher import EventPublisher
from emergify_stream.spark import build_spark_session
from emergify_stream.speed.feature_table import BATCH_COLUMNS, FeatureTableSink

log = structlog.get_logger()

#: Marks a feature-table row whose stored version came from the lake, not a Kafka partition
#: (``kafka_offset`` then holds the song's row in its upload).
LAKE_PARTITION = -1


class EmptyMasterDataset(RuntimeError):
    """The lake holds no song: there is nothing to rebuild from."""


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild did."""

    query_name: str
    songs: int
    chunks: int
    table_version: int
    model: BatchRun | None
    seconds: float


def _empty_message(settings: Settings) -> str:
    return (
        f"the master dataset at {songs_location(settings.lake_uri)} is missing or holds no "
        "file; nothing to rebuild from (is EMERGIFY_LAKE_URI right?)"
    )


def _as_batch(latest: DataFrame) -> DataFrame:
    """Lake columns -> the sink's :data:`BATCH_COLUMNS` (``row`` is the position)."""
    renamed = {"kafka_partition": f"CAST({LAKE_PARTITION} AS INT)", "kafka_offset": "`row`"}
    return latest.selectExpr(*(f"{renamed.get(c, f'`{c}`')} AS `{c}`" for c in BATCH_COLUMNS))


def rebuild(
    spark: SparkSession,
    settings: Settings,
    publisher: EventPublisher | None = None,
    train: bool = True,
) -> RebuildReport:
    """Upsert the lake's latest version of every song into the feature table, then (unless
    ``train`` is False) run the batch layer on the same rows."""
    started = time.perf_counter()
    engine = make_engine(settings.database_url)
    try:
        create_tables(engine)
        registry = ModelRegistry(engine)
        sink = FeatureTableSink(engine, registry, publisher)
        latest = latest_songs(spark, settings.lake_uri)
        if latest is None:
            raise EmptyMasterDataset(_empty_message(settings))
        latest = _as_batch(latest).cache()
        try:
            n = latest.count()
            if n == 0:
                raise EmptyMasterDataset(
                    f"the master dataset at {songs_location(settings.lake_uri)} holds no song"
                )
            chunks = math.ceil(n / settings.rebuild_chunk_rows)
            query_name = f"rebuild-{uuid.uuid4()}"
            log.info("rebuilding the feature table", songs=n, chunks=chunks, query=query_name)
            # A stable hash spreads the ids over the chunks; each chunk is one transaction.
            chunked = latest.selectExpr("*", f"pmod(xxhash64(track_id), {chunks}) AS _chunk")
            version = 0
            for chunk in range(chunks):
                frame = chunked.where(f"_chunk = {chunk}").drop("_chunk").toPandas()
                version = sink.write(query_name, chunk, frame).table_version
            run = None
            if train:
                data = TrainingData(
                    latest.select(*PROFILE_INPUT_COLUMNS),
                    n,
                    "master-dataset",
                    f"latest version per track id in {songs_location(settings.lake_uri)} "
                    f"(rebuild {query_name})",
                )
                run = run_batch_layer(spark, engine, settings, registry, publisher, data)
        finally:
            latest.unpersist()
    finally:
        engine.dispose()
    report = RebuildReport(
        query_name=query_name,
        songs=n,
        chunks=chunks,
        table_version=version,
        model=run,
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info(
        "feature table rebuilt from the master dataset",
        songs=n,
        table_version=version,
        model_version=run.model.version if run else None,
        seconds=report.seconds,
    )
    return report


def reconcile(spark: SparkSession, settings: Settings, sink: FeatureTableSink) -> int:
    """Upsert the lake's songs that the feature table lacks, or holds an older version of;
    return how many. For when the broker lost records (a restarted embedded broker): unlike
    :func:`rebuild`, songs the table already holds are not written again, so the table
    version and ``stream_batches`` count each song once. Safe while the stream runs: the
    sink's upsert never overwrites a newer version.
    """
    latest = latest_songs(spark, settings.lake_uri)
    if latest is None:
        return 0
    with sink.engine.connect() as conn:
        stored = pd.read_sql(sa.select(songs.c.track_id, songs.c.ingested_at), conn)
    stored["ingested_at"] = pd.to_datetime(stored["ingested_at"], utc=True).dt.tz_localize(None)
    stored_df = spark.createDataFrame(
        stored.rename(columns={"ingested_at": "stored_at"}),
        schema="track_id string, stored_at timestamp",
    )
    missing = (
        _as_batch(latest)
        .join(stored_df, "track_id", "left")
        # Only ingested_at across stores: the ingest writes a chunk to the lake and to Kafka
        # with one ingested_at, and a lake row number is no Kafka offset, so an equal
        # ingested_at is the version already stored, not a newer one.
        .where("stored_at IS NULL OR ingested_at > stored_at")
        .drop("stored_at")
        .toPandas()
    )
    if missing.empty:
        return 0
    query_name = f"reconcile-{uuid.uuid4()}"
    chunk_rows = settings.rebuild_chunk_rows
    for chunk, lo in enumerate(range(0, len(missing), chunk_rows)):
        sink.write(query_name, chunk, missing.iloc[lo : lo + chunk_rows])
    log.info(
        "feature table reconciled with the master dataset", songs=len(missing), query=query_name
    )
    return len(missing)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: rebuild with the environment's settings; 0 on success."""
    parser = argparse.ArgumentParser(
        prog="python -m emergify_stream.batch.rebuild",
        description="Rebuild the feature table and the model from the master dataset alone "
        "(run it while the stream processor is stopped).",
    )
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="do not send catalog-change and model events to Kafka (no broker needed)",
    )
    parser.add_argument("--no-train", action="store_true", help="rebuild the table only")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging("stream-processor", settings.log_level, settings.log_format)
    if known_empty(settings.lake_uri):  # say so before paying for Spark's start
        print(f"rebuild: {_empty_message(settings)}", file=sys.stderr)
        return 2
    publisher = (
        None
        if args.no_publish
        else EventPublisher(
            settings.kafka_bootstrap_servers,
            settings.songs_dlq_topic,
            settings.catalog_changes_topic,
            settings.models_topic,
        )
    )
    spark = build_spark_session(
        settings.spark_master,
        "emergify-rebuild",
        **settings.spark_conf(),
    )
    try:
        report = rebuild(spark, settings, publisher, train=not args.no_train)
    except EmptyMasterDataset as exc:
        print(f"rebuild: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        # Catalog changes are best-effort in the sink; only the model announcement gets
        # here, after the table and the model registry are written.
        print(
            f"rebuild: the feature table and the model are rebuilt, but the model event could "
            f"not be sent to {settings.kafka_bootstrap_servers}: {exc!r}. The recommender "
            "loads the current model when it starts; or rerun with the broker up.",
            file=sys.stderr,
        )
        return 3
    finally:
        if publisher is not None:
            publisher.close()
        spark.stop()
    model = report.model
    print(
        f"rebuilt {report.songs} songs from the master dataset into the feature table "
        f"(table version {report.table_version}, {report.chunks} chunks, {report.query_name})"
        + (
            f"; model v{model.model.version}: k={model.model.k}, "
            f"silhouette={model.model.silhouette:.3f}"
            if model
            else ""
        )
        + f"; {report.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
