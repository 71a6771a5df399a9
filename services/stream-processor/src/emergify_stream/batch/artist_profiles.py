"""The batch layer's artist profiles: every artist's running sums recomputed with Spark SQL
over the songs the model was trained on, standardized with the new model's scaler, and
written under the new model version in the transaction that publishes the model
(docs/similarity.md, "Integration spec"). The maths is
:mod:`emergify_contracts.artist_profiles`; this is its Spark SQL form.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from sqlalchemy.engine import Connection

from emergify_contracts.artist_profiles import (
    PROFILE_FEATURES,
    SongChange,
    apply_song_changes,
    artist_credits,
)
from emergify_contracts.model import PortableModel
from emergify_contracts.tables import songs
from emergify_stream.artist_rows import table_rows

#: Columns the profile query needs from the training songs (one row per track id).
PROFILE_INPUT_COLUMNS: tuple[str, ...] = (
    "track_id",
    "artists",
    "artist_ids",
    "genres",
    "ingested_at",
    *PROFILE_FEATURES,
)
SONGS_VIEW = "profile_songs"
SCALER_VIEW = "profile_scaler"

#: Each credit as ``[artist_key, name]`` (a plain array: the Arrow UDF path converts it as is).
_CREDIT = T.ArrayType(T.ArrayType(T.StringType()))


def _credits(artists: Sequence[str] | None, artist_ids: Sequence[str] | None) -> list[Any]:
    # The keys come from the one Python definition: Spark's lower() is not casefold().
    return [list(c) for c in artist_credits(list(artists or ()), list(artist_ids or ()))]


def profile_sql(songs_view: str = SONGS_VIEW, scaler_view: str = SCALER_VIEW) -> str:
    """Spark SQL: one row per artist key with ``name``, ``song_count``, the nine
    ``sum_<feature>`` of standardized features and the ``genres`` union of the artist's
    single-artist songs, over ``songs_view`` (with a ``credits`` column) and the one-row
    ``scaler_view`` (``mean_<feature>``, ``scale_<feature>``)."""
    zs = ",\n         ".join(
        f"(l.`{f}` - s.mean_{f}) / s.scale_{f} AS z_{f}" for f in PROFILE_FEATURES
    )
    zcols = ", ".join(f"z_{f}" for f in PROFILE_FEATURES)
    sums = ",\n       ".join(f"sum(z_{f}) AS sum_{f}" for f in PROFILE_FEATURES)
    return f"""
WITH z AS (
  SELECT l.track_id, l.credits, l.genres, l.ingested_at,
         {zs}
  FROM {songs_view} l CROSS JOIN {scaler_view} s
), credits AS (
  SELECT explode(credits) AS credit, size(credits) AS n_credits, genres, ingested_at, {zcols}
  FROM z
)
SELECT credit[0] AS artist_key,
       max_by(credit[1], ingested_at) AS name,
       count(*) AS song_count,
       {sums},
       array_sort(array_distinct(flatten(collect_list(
         CASE WHEN n_credits = 1 THEN coalesce(genres, array()) ELSE array() END
       )))) AS genres
FROM credits
GROUP BY credit[0]
"""


def scaler_frame(spark: SparkSession, model: PortableModel) -> DataFrame:
    """The model's scaler as one row: ``mean_<feature>``, ``scale_<feature>``."""
    arrays = model.arrays()
    row = {f"mean_{f}": float(m) for f, m in zip(PROFILE_FEATURES, arrays.means, strict=True)}
    row |= {f"scale_{f}": float(s) for f, s in zip(PROFILE_FEATURES, arrays.scales, strict=True)}
    return spark.createDataFrame([row])


def with_credits(frame: DataFrame) -> DataFrame:
    """``frame`` with a ``credits`` column (:func:`artist_credits` of each song), computed in
    Python once per distinct (``artists``, ``artist_ids``) pair and joined back: far fewer
    pairs than songs, and Python UDF tasks hold a task slot the speed layer may wait for."""
    # (A lambda: Spark reads a function's type hints as a request for a pandas UDF.)
    credits = F.udf(lambda a, i: _credits(a, i), _CREDIT)
    pairs = (
        frame.select(F.col("artists").alias("p_artists"), F.col("artist_ids").alias("p_ids"))
        .distinct()
        .withColumn("credits", credits("p_artists", "p_ids"))
    )
    # Null-safe: a song without artists (or ids) still finds its pair.
    same = frame["artists"].eqNullSafe(pairs["p_artists"]) & frame["artist_ids"].eqNullSafe(
        pairs["p_ids"]
    )
    return frame.join(pairs, same).drop("p_artists", "p_ids")


def spark_profiles(spark: SparkSession, frame: DataFrame, model: PortableModel) -> pd.DataFrame:
    """Every artist's profile row over ``frame`` (:data:`PROFILE_INPUT_COLUMNS`, one row
    per song) under ``model``'s scaler, computed by :func:`profile_sql`."""
    with_credits(frame).createOrReplaceTempView(SONGS_VIEW)
    scaler_frame(spark, model).createOrReplaceTempView(SCALER_VIEW)
    return spark.sql(profile_sql()).toPandas()


from emergify_stream.artist_rows import (  # noqa: E402, F401  (the batch layer's API)
    ProfileRows,
    has_profiles,
    note_song,
    read_profiles,
    song_artist_keys,
    standardized_version,
    table_songs,
    write_profiles,
)

#: Lake rows this much older than the newest song in the feature table are taken to be in
#: the table already; younger ones are compared with the table at publish time.
RECONCILE_MARGIN = timedelta(minutes=15)


def reconcile_with_table(
    conn: Connection,
    rows: ProfileRows,
    snapshot: DataFrame,
    model: PortableModel,
    since_table_version: int,
) -> int:
    """Make ``rows`` (computed from ``snapshot``, the songs Spark read) describe the feature
    table as it is now, inside the publishing transaction: the speed layer's later deltas
    start from the table's versions, so a song the table changed after the snapshot (or the
    snapshot holds and the table not yet) has its snapshot version swapped for the table's
    (:func:`apply_song_changes`). Returns the number of songs compared."""
    newest = conn.execute(sa.select(sa.func.max(songs.c.ingested_at))).scalar()
    recent = songs.c.table_version > since_table_version
    cutoff = None
    if newest is not None:
        cutoff = pd.Timestamp(newest)
        cutoff = cutoff.tz_localize(UTC) if cutoff.tzinfo is None else cutoff.tz_convert(UTC)
        cutoff = (cutoff - RECONCILE_MARGIN).to_pydatetime()
        recent = recent | (songs.c.ingested_at >= cutoff)
    table = table_rows(conn, recent)
    condition = F.col("track_id").isin(list(table)) if table else F.lit(False)
    if cutoff is not None:
        condition = condition | (F.col("ingested_at") >= F.lit(cutoff))
    snap = {
        r["track_id"]: r.asDict()
        for r in snapshot.where(condition).select(*PROFILE_INPUT_COLUMNS).collect()
    }
    table |= table_songs(conn, [i for i in snap if i not in table])

    def version(row: Any) -> tuple[np.ndarray, tuple[str, ...]]:
        return standardized_version(model, row)

    changes = []
    for track_id in set(snap) | set(table):
        before = snap.get(track_id)
        after = table.get(track_id)
        changes.append(
            SongChange(
                None if before is None else version(before),
                None if after is None else version(after),
            )
        )
        if after is not None:
            note_song(rows, after)
    rows.profiles = apply_song_changes(rows.profiles, changes)
    return len(changes)
