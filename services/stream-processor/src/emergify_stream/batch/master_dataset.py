"""The batch layer's input: the master dataset (the lake), read by Spark.

The ingest service appends every accepted song to the lake laid out as
:mod:`emergify_contracts.lake` says (columns: the Song fields, then ``upload_id, source,
ingested_at, row``). Spark reads that directory itself — on a cluster the lake is shared
storage (``s3a://...``), so the executors read it, not the driver — and
:data:`LATEST_LAKE_SQL` keeps the latest version of each track id
(:mod:`emergify_contracts.versions`).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

from emergify_contracts import lake
from emergify_contracts.lake import feedback_location, known_empty, local_path, songs_location
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.song_schemas import lake_columns, spark_lake_ddl
from emergify_contracts.versions import LAKE_POSITION, latest_per_key_sql

log = structlog.get_logger()

#: The view :data:`LATEST_LAKE_SQL` reads.
LAKE_VIEW = "master_songs"

#: Explicit schema of a master-dataset file (the ingest writer's Arrow schema, in Spark
#: types): no schema inference, and a column a newer writer adds cannot break old readers.
LAKE_SCHEMA = spark_lake_ddl()

#: Every column of a master-dataset row (the provenance columns last).
LAKE_COLUMNS: tuple[str, ...] = lake_columns()

_USABLE = " AND ".join(
    ["track_id IS NOT NULL", "ingested_at IS NOT NULL"]
    + [f"{f} IS NOT NULL AND NOT isnan({f})" for f in AUDIO_FEATURES]
)


def latest_lake_sql(columns: Sequence[str] = LAKE_COLUMNS) -> str:
    """Spark SQL over the :data:`LAKE_VIEW` view: one row per track id, its latest version,
    with ``columns``.

    The ingest service validated every row before writing it; rows without an id, a
    timestamp or a feature (which it never writes) are skipped rather than trusted.
    """
    return latest_per_key_sql(LAKE_VIEW, columns, LAKE_POSITION, where=_USABLE)


#: The latest version of every song, every column.
LATEST_LAKE_SQL = latest_lake_sql()


def read_master_dataset(spark: SparkSession, lake_uri: str) -> DataFrame | None:
    """Every version of every song in the lake, or None when the lake is missing or empty.

    Only complete files are read: the writer's ``*.tmp`` files (renamed once fsynced) and
    its health probes do not match ``*.parquet``.
    """
    if known_empty(lake_uri):
        return None
    location = songs_location(lake_uri)
    try:
        frame = (
            spark.read.schema(LAKE_SCHEMA)
            .option("pathGlobFilter", lake.FILE_GLOB)
            .option("recursiveFileLookup", "true")
            .parquet(location)
        )
    except AnalysisException as exc:  # a remote lake that does not exist (yet)
        log.warning("the master dataset cannot be read", location=location, error=str(exc))
        return None
    return frame


def latest_songs(
    spark: SparkSession, lake_uri: str, columns: Sequence[str] = LAKE_COLUMNS
) -> DataFrame | None:
    """The latest version of each track id in the lake (:func:`latest_lake_sql`), or None
    when the lake is missing or holds no file."""
    frame = read_master_dataset(spark, lake_uri)
    if frame is None:
        return None
    frame.createOrReplaceTempView(LAKE_VIEW)
    return spark.sql(latest_lake_sql(columns))


#: Explicit schema of a feedback file of the master dataset (the ingest's Arrow schema).
FEEDBACK_LAKE_SCHEMA = (
    "event_id string, listener_id string, track_id string, signal string, at timestamp"
)


def read_feedback(spark: SparkSession, lake_uri: str) -> DataFrame | None:
    """Every listener feedback event of the lake (erasures included), or None when the lake
    holds none. Complete files only, as for songs."""
    root = local_path(lake_uri)
    if root is not None and not (root / lake.FEEDBACK_DIR).is_dir():
        return None
    location = feedback_location(lake_uri)
    try:
        return (
            spark.read.schema(FEEDBACK_LAKE_SCHEMA)
            .option("pathGlobFilter", lake.FILE_GLOB)
            .option("recursiveFileLookup", "true")
            .parquet(location)
        )
    except AnalysisException as exc:  # a remote lake without feedback (yet)
        log.warning("the feedback of the master dataset cannot be read", error=str(exc))
        return None
