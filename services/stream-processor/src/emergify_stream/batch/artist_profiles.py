"""The batch layer's artist profiles: every artist's running sums recomputed with Spark SQL
over the songs the model was trained on, standardized with the new model's scaler, and
written under the new model version in the transaction that publishes the model
(docs/similarity.md, "Integration spec"). The maths is
:mod:`emergify_contracts.artist_profiles`; this is its Spark SQL form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    ArtistProfiles,
    SongChange,
    apply_song_changes,
    artist_credits,
    artist_keys,
)
from emergify_contracts.model import PortableModel
from emergify_contracts.tables import PROFILE_SUM_COLUMNS, artist_profiles, songs

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
#: Lake rows this much older than the newest song in the feature table are taken to be in
#: the table already; younger ones are compared with the table at publish time.
RECONCILE_MARGIN = timedelta(minutes=15)

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


# (A lambda: Spark reads a function's type hints as a request for a pandas UDF.)
def spark_profiles(spark: SparkSession, frame: DataFrame, model: PortableModel) -> pd.DataFrame:
    """Every artist's profile row over ``frame`` (:data:`PROFILE_INPUT_COLUMNS`, one row
    per song) under ``model``'s scaler, computed by :func:`profile_sql`."""
    credits = F.udf(lambda a, i: _credits(a, i), _CREDIT)
    with_credits = frame.withColumn("credits", credits("artists", "artist_ids"))
    with_credits.createOrReplaceTempView(SONGS_VIEW)
    scaler_frame(spark, model).createOrReplaceTempView(SCALER_VIEW)
    return spark.sql(profile_sql()).toPandas()


@dataclass
class ProfileRows:
    """Profile rows in memory, keyed by artist key, before they are written."""

    names: dict[str, str]
    genres: dict[str, set[str]]
    profiles: ArtistProfiles

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> ProfileRows:
        keys = tuple(str(k) for k in frame["artist_key"])
        width = len(PROFILE_FEATURES)
        sums = frame[list(PROFILE_SUM_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1, width)
        counts = frame["song_count"].to_numpy(dtype=np.int64)
        names = {k: str(n or "") for k, n in zip(keys, frame["name"], strict=True)}
        genres = {
            k: set(g if g is not None else ()) for k, g in zip(keys, frame["genres"], strict=True)
        }
        return cls(names, genres, ArtistProfiles(keys, sums, counts))

    def records(self, model_version: int, table_version: int) -> list[dict[str, Any]]:
        """``artist_profiles`` rows."""
        now = datetime.now(UTC)
        p = self.profiles
        out = []
        for i, key in enumerate(p.keys):
            row: dict[str, Any] = {
                "model_version": model_version,
                "artist_key": key,
                "name": self.names.get(key, ""),
                "song_count": int(p.counts[i]),
                "genres": sorted(self.genres.get(key, ())),
                "table_version": table_version,
                "updated_at": now,
            }
            row.update({c: float(v) for c, v in zip(PROFILE_SUM_COLUMNS, p.sums[i], strict=True)})
            out.append(row)
        return out


def song_artist_keys(row: Any) -> tuple[str, ...]:
    """A ``songs`` row's artist keys: the stored ones, else derived (rows written before the
    column existed)."""
    stored = row.get("artist_keys")
    if stored:
        return tuple(stored)
    return artist_keys(list(row["artists"] or ()), list(row["artist_ids"] or ()))


def _table_rows(conn: Connection, where: Any) -> dict[str, Any]:
    cols = [songs.c.track_id, songs.c.artists, songs.c.artist_ids, songs.c.artist_keys]
    cols += [songs.c.genres, *(songs.c[f] for f in PROFILE_FEATURES)]
    return {r.track_id: r._mapping for r in conn.execute(sa.select(*cols).where(where))}


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
    table = _table_rows(conn, recent)
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


def note_song(rows: ProfileRows, song: Any) -> None:
    """Record a song's artist names and (single-artist songs) genres on its artists' rows."""
    credits = artist_credits(list(song["artists"] or ()), list(song["artist_ids"] or ()))
    for key, name in credits:
        if name:
            rows.names[key] = name
        rows.genres.setdefault(key, set())
    if len(credits) == 1:
        rows.genres[credits[0][0]].update(song["genres"] or ())


def write_profiles(
    conn: Connection, rows: ProfileRows, model_version: int, table_version: int
) -> int:
    """Replace every ``artist_profiles`` row of ``model_version`` with ``rows``."""
    conn.execute(artist_profiles.delete().where(artist_profiles.c.model_version == model_version))
    records = rows.records(model_version, table_version)
    for start in range(0, len(records), 10_000):
        conn.execute(artist_profiles.insert(), records[start : start + 10_000])
    return len(records)


def read_profiles(
    conn: Connection, model_version: int, keys: Iterable[str] | None = None
) -> ProfileRows:
    """The stored rows of ``model_version`` (only ``keys`` when given)."""
    query = sa.select(artist_profiles).where(artist_profiles.c.model_version == model_version)
    records: list[dict[str, Any]] = []
    if keys is None:
        records = [dict(r._mapping) for r in conn.execute(query)]
    else:
        wanted = list(keys)
        for start in range(0, len(wanted), 500):
            chunk = query.where(artist_profiles.c.artist_key.in_(wanted[start : start + 500]))
            records += [dict(r._mapping) for r in conn.execute(chunk)]
    frame = pd.DataFrame(
        records, columns=["artist_key", "name", "song_count", *PROFILE_SUM_COLUMNS, "genres"]
    )
    return ProfileRows.from_frame(frame)


def has_profiles(conn: Connection, model_version: int) -> bool:
    """Whether the batch layer wrote profiles for ``model_version`` (a model published before
    profiles existed has none: the speed layer then leaves them to the next retrain)."""
    query = sa.select(artist_profiles.c.artist_key).where(
        artist_profiles.c.model_version == model_version
    )
    return conn.execute(query.limit(1)).first() is not None


def table_songs(conn: Connection, ids: Sequence[str], where: Any = None) -> dict[str, Any]:
    """``songs`` rows (id, artists, keys, genres, features) of ``ids``, by track id."""
    out: dict[str, Any] = {}
    for start in range(0, len(ids), 500):
        condition = songs.c.track_id.in_(list(ids[start : start + 500]))
        out |= _table_rows(conn, condition if where is None else condition & where)
    return out


def standardized_version(model: PortableModel, row: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """A song's standardized features under ``model`` and its artist keys."""
    x = np.array([[row[f] for f in PROFILE_FEATURES]], dtype=np.float64)
    return model.standardize(x)[0], song_artist_keys(row)
