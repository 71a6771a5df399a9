"""The batch layer's input: the master dataset (the lake), read by Spark.

The ingest service appends every accepted song to
``{lake}/songs/date=YYYY-MM-DD/{upload_id}-{chunk:05d}.parquet`` (columns: the Song fields,
then ``upload_id, source, ingested_at, row``). Spark reads that directory itself — on a
cluster the lake is shared storage (``s3a://...``), so the executors read it, not the driver —
and :data:`LATEST_LAKE_SQL` keeps the latest version of each track id, the row with the
greatest ``(ingested_at, row)``, the rule the ingest service documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import structlog
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.song_schemas import lake_columns, spark_lake_ddl

log = structlog.get_logger()

SONGS_DIR = "songs"
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
    """Spark SQL over the :data:`LAKE_VIEW` view: one row per track id, the latest version
    (greatest ``ingested_at``, then ``row``; ``upload_id`` only breaks exact ties so the
    answer is deterministic), with ``columns``.

    The ingest service validated every row before writing it; rows without an id, a
    timestamp or a feature (which it never writes) are skipped rather than trusted.
    """
    cols = ", ".join(f"`{c}`" for c in columns)
    return f"""
SELECT {cols}
FROM (
  SELECT {cols}, row_number() OVER (
    PARTITION BY track_id ORDER BY ingested_at DESC, `row` DESC, upload_id DESC
  ) AS version_rank
  FROM {LAKE_VIEW}
  WHERE {_USABLE}
)
WHERE version_rank = 1
"""


#: The latest version of every song, every column.
LATEST_LAKE_SQL = latest_lake_sql()


def songs_location(lake_uri: str) -> str:
    """Where the master dataset's files are, as Spark should read it: a URI with a scheme
    (``s3a://``, ``hdfs://``, ``file://``) as is, a local path made absolute."""
    parsed = urlparse(lake_uri)
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive
        return lake_uri.rstrip("/") + "/" + SONGS_DIR
    return str(Path(lake_uri).resolve() / SONGS_DIR)


def known_empty(lake_uri: str) -> bool:
    """True when the lake is local and holds no master-dataset file (no Spark needed to
    tell); a remote lake is never known empty here."""
    return _local_and_empty(songs_location(lake_uri))


def _local_and_empty(location: str) -> bool:
    parsed = urlparse(location)
    if parsed.scheme and len(parsed.scheme) > 1 and parsed.scheme != "file":
        return False  # remote storage: ask Spark
    path = Path(parsed.path if parsed.scheme == "file" else location)
    return not path.is_dir() or next(path.glob("date=*/*.parquet"), None) is None


def read_master_dataset(spark: SparkSession, lake_uri: str) -> DataFrame | None:
    """Every version of every song in the lake, or None when the lake is missing or empty.

    Only complete files are read: the writer's ``*.tmp`` files (renamed once fsynced) and
    its health probes do not match ``*.parquet``.
    """
    location = songs_location(lake_uri)
    if _local_and_empty(location):
        return None
    try:
        frame = (
            spark.read.schema(LAKE_SCHEMA)
            .option("pathGlobFilter", "*.parquet")
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
