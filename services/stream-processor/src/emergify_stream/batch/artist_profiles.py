"""The batch layer's artist profiles: every artist's running sums recomputed with Spark SQL
over the songs the model was trained on, standardized with the new model's scaler, and
written under the new model version in the transaction that publishes the model
(docs/similarity.md, "Integration spec"). The maths is
:mod:`emergify_contracts.artist_profiles`; this is its Spark SQL form.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
import structlog
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
)
from emergify_contracts.model import PortableModel
from emergify_contracts.tables import songs
from emergify_stream.speed.feature_table import table_version

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
    table_frame,
    table_frame_of,
    table_frames,
    table_songs,
    write_profiles,
)

log = structlog.get_logger()

#: Lake rows this much older than the newest song in the feature table are taken to be in
#: the table already; younger ones are compared with the table at publish time.
RECONCILE_MARGIN = timedelta(minutes=15)


@dataclass(frozen=True)
class TableComparison:
    """What :func:`compare_with_table` did, as of ``table_version``: ``compared`` songs were
    compared; ``songs`` holds the table's version of each the table held differently from
    the snapshot (or the snapshot lacked), ``absent`` the ids of the snapshot's songs the
    table lacked (taken out of the profiles). Every other compared song was equal on both
    sides, so the snapshot's row is the version the profiles count it under."""

    table_version: int
    songs: pd.DataFrame
    compared: int
    absent: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))


def compare_with_table(
    conn: Connection,
    rows: ProfileRows,
    snapshot: DataFrame,
    model: PortableModel,
    since_table_version: int,
) -> TableComparison:
    """Make ``rows`` (computed from ``snapshot``, the songs Spark read) describe the feature
    table as of the version this reads first: the speed layer's later deltas start from the
    table's versions, so a song the table changed after the snapshot (or the snapshot holds
    and the table not yet) has its snapshot version swapped for the table's
    (:func:`apply_song_changes`). Runs before the publishing transaction;
    :func:`reconcile_with_table` then catches up with what the table changed since.

    By digest: each side's recent songs are reduced to (track id, 64-bit digest of the
    profile inputs, :func:`song_digests`) — in Spark for the snapshot, chunk by chunk for the
    table — and only the songs whose digests differ (or that one side lacks) are read in
    full and run per-song Python. After a bulk load every song is recent and nearly all are
    equal: at 10M songs the full rows of both sides would not fit the driver, the digests do
    (two Arrow columns). Two different versions share a digest with probability 2^-64."""
    # Read first: whatever the reads below miss or see half-way has a later table version,
    # and the catch-up swaps it from the version compared here (or the snapshot's).
    version = table_version(conn)
    newest = conn.execute(sa.select(sa.func.max(songs.c.ingested_at))).scalar()
    if newest is None:  # an empty table: nothing the snapshot could be compared with
        return TableComparison(version, _table_side(table_frame(conn, sa.false())), 0)
    cutoff = pd.Timestamp(newest)
    cutoff = cutoff.tz_localize(UTC) if cutoff.tzinfo is None else cutoff.tz_convert(UTC)
    cutoff = (cutoff - RECONCILE_MARGIN).to_pydatetime()
    recent = (songs.c.table_version > since_table_version) | (songs.c.ingested_at >= cutoff)
    table = table_digests(conn, recent)
    young = F.coalesce(F.col("ingested_at") >= F.lit(cutoff), F.lit(False))
    snap = _snapshot_digests(snapshot.where(young))
    # The table's recent songs the snapshot holds as older ones (changed since, or
    # ingested_at kept across a later offset), and the snapshot's young songs the table
    # holds as older ones: each side's digest of those too.
    older = _absent(table, snap)
    if len(older):
        snap = pa.concat_tables(
            [snap, _snapshot_digests(_semi_join(snapshot.where(~young), older))]
        )
    missing = _absent(snap, table)
    if len(missing):
        table = pa.concat_tables([table, table_digests_of(conn, missing.to_pylist())])
    joined = snap.join(
        table, "track_id", join_type="full outer", left_suffix="_s", right_suffix="_t"
    )
    in_table = pc.is_valid(joined["digest_t"])
    same = pc.fill_null(pc.equal(joined["digest_s"], joined["digest_t"]), False)
    # Songs the snapshot holds and the table not yet (a bulk load the speed layer is still
    # writing: up to most of the snapshot) leave the profiles in bulk, by the profile query
    # over just them; the rest that differ are swapped one by one.
    absent = pc.filter(joined["track_id"], pc.invert(in_table)).combine_chunks()
    if len(absent):
        _remove_songs(rows, _semi_join(snapshot, absent), model)
    differ = pc.filter(joined["track_id"], pc.and_(in_table, pc.invert(same))).to_pylist()
    both = _full_rows(conn, snapshot, differ)
    changed = _apply_differences(rows, model, both)
    log.info(
        "profiles compared with the table",
        compared=joined.num_rows,
        changed=changed,
        absent_from_table=len(absent),
    )
    return TableComparison(version, _table_side(both), joined.num_rows, absent)


def _remove_songs(rows: ProfileRows, removed: DataFrame, model: PortableModel) -> None:
    """Take ``removed``'s songs (Spark rows of the snapshot ``rows`` was computed from) out
    of ``rows``: the profile query over them, subtracted per artist. Their artists keep
    their names and genres, as when the speed layer moves a song away."""
    spark = removed.sparkSession
    part = ProfileRows.from_frame(
        spark_profiles(spark, removed.select(*PROFILE_INPUT_COLUMNS), model)
    )
    p, q = rows.profiles, part.profiles
    position = p.position()
    missing = [k for k in q.keys if k not in position]
    if missing:
        raise ValueError(
            f"{len(missing)} artists of removed songs have no profile, e.g. {missing[0]!r}"
        )
    at = np.array([position[k] for k in q.keys], dtype=np.int64)
    sums, counts = p.sums.copy(), p.counts.copy()
    np.subtract.at(sums, at, q.sums)
    np.subtract.at(counts, at, q.counts)
    if (counts < 0).any():
        raise ValueError("removing songs left an artist with fewer than no songs")
    sums[counts == 0] = 0.0  # no songs: no sum (not the rounding left by the subtraction)
    rows.profiles = ArtistProfiles(p.keys, sums, counts)


def reconcile_with_table(
    conn: Connection,
    rows: ProfileRows,
    snapshot: DataFrame,
    model: PortableModel,
    since_table_version: int,
    compared: TableComparison | None = None,
) -> int:
    """Inside the publishing transaction: make ``rows`` describe the feature table as it is
    now. Given ``compared`` (:func:`compare_with_table`'s, outside the transaction) only the
    songs the table changed since then are moved, from the version ``rows`` counts them
    under (the compared table's when it differed from the snapshot, else the snapshot's) to
    the table's; else the whole comparison runs here. Returns the number of songs compared."""
    if compared is None:
        return compare_with_table(conn, rows, snapshot, model, since_table_version).compared
    later = table_frame(conn, songs.c.table_version > compared.table_version)
    if later.empty:
        return 0
    known = compared.songs[compared.songs["track_id"].isin(later["track_id"])]
    before = known[known["_merge"] != "left_only"].drop(columns="_merge")
    # Not in the profiles: taken out as absent from the table (now arriving: added).
    removed = pc.is_in(pa.array(later["track_id"].astype(str)), value_set=compared.absent)
    removed = removed.to_numpy(zero_copy_only=False)
    unknown = later["track_id"][~later["track_id"].isin(known["track_id"]) & ~removed]
    if len(unknown):
        lake = _semi_join(snapshot, pa.array(unknown.astype(str))).select(*PROFILE_INPUT_COLUMNS)
        lake = lake.toPandas().drop_duplicates("track_id", keep="last")
        before = pd.concat([before, lake.drop(columns="ingested_at")], ignore_index=True)
    both = before.drop(columns="artist_keys", errors="ignore").merge(
        later, on="track_id", how="outer", suffixes=("_s", "_t"), indicator=True
    )
    changed = _apply_differences(rows, model, both)
    log.info("profiles caught up with the table", compared=len(both), changed=changed)
    return len(both)


def _table_side(both: pd.DataFrame) -> pd.DataFrame:
    """The merged frame's table columns under their own names, with ``_merge``."""
    if "_merge" not in both:  # the table's own frame: every song present
        return both.assign(_merge="both")
    names = {f"{c}_t": c for c in (*_LIST_COLUMNS, *PROFILE_FEATURES)}
    return both[["track_id", *names, "artist_keys", "_merge"]].rename(columns=names)


def _apply_differences(rows: ProfileRows, model: PortableModel, both: pd.DataFrame) -> int:
    """Swap each song of ``both`` (snapshot side ``_s``, table side ``_t``, pandas'
    ``_merge``) whose two versions differ; the number swapped."""
    differ = ~_same_song(both)
    changes = [
        SongChange(before, after)
        for before, after in zip(
            _versions(model, both, differ, "_s", stored_keys=False),
            _versions(model, both, differ, "_t", stored_keys=True),
            strict=True,
        )
    ]
    for song in _song_dicts(both[differ & (both["_merge"] != "left_only")], "_t"):
        note_song(rows, song)
    if changes:
        rows.profiles = apply_song_changes(rows.profiles, changes)
    return len(changes)


def _semi_join(frame: DataFrame, ids: pa.Array) -> DataFrame:
    """``frame``'s rows whose track id is in ``ids``. The ids go to Spark as a DataFrame and
    are semi-joined: one literal per id through py4j took minutes for a million."""
    spark = frame.sparkSession
    wanted = spark.createDataFrame(pa.table({"track_id": ids.cast(pa.string())}))
    return frame.join(wanted, "track_id", "left_semi")


def _snapshot_digests(frame: DataFrame) -> pa.Table:
    """(track_id, digest) of ``frame``'s songs, computed by Spark's Python workers with the
    table side's function and collected as Arrow (the latest row of a repeated id)."""
    digests = frame.select(*PROFILE_INPUT_COLUMNS).mapInPandas(_digest_batches, _DIGEST_SCHEMA)
    return _last_per_id(digests.toArrow())


def _id_digests(frame: pd.DataFrame) -> pd.DataFrame:
    """(track_id, digest) of ``frame``'s songs; the digest as int64 (Spark has no unsigned
    long)."""
    digest = song_digests(frame).view(np.int64)
    return pd.DataFrame({"track_id": frame["track_id"].astype(str), "digest": digest})


def _digest_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        yield _id_digests(batch)


_DIGEST_SCHEMA = "track_id string, digest long"


def _last_per_id(table: pa.Table) -> pa.Table:
    table = table.select(["track_id", "digest"]).cast(
        pa.schema([("track_id", pa.string()), ("digest", pa.int64())])
    )
    if pc.count_distinct(table["track_id"]).as_py() == table.num_rows:
        return table
    frame = table.to_pandas().drop_duplicates("track_id", keep="last")
    return pa.Table.from_pandas(frame, preserve_index=False)


def table_digests(conn: Connection, where: Any) -> pa.Table:
    """(track_id, digest) of the ``songs`` rows matching ``where``, read in chunks: only the
    two columns are kept, whatever the number of rows."""
    parts = [
        pa.Table.from_pandas(_id_digests(f), schema=_DIGESTS_EMPTY.schema, preserve_index=False)
        for f in table_frames(conn, where)
    ]
    return pa.concat_tables(parts) if parts else _DIGESTS_EMPTY


def table_digests_of(conn: Connection, ids: Sequence[str]) -> pa.Table:
    """:func:`table_digests` of the rows of ``ids``."""
    parts = [
        table_digests(conn, songs.c.track_id.in_(list(ids[start : start + 500])))
        for start in range(0, len(ids), 500)
    ]
    return pa.concat_tables(parts) if parts else _DIGESTS_EMPTY


_DIGESTS_EMPTY = pa.table(
    {"track_id": pa.array([], pa.string()), "digest": pa.array([], pa.int64())}
)


def _absent(these: pa.Table, there: pa.Table) -> pa.Array:
    """The track ids of ``these`` that ``there`` lacks."""
    ids = these["track_id"].combine_chunks()
    return pc.filter(ids, pc.invert(pc.is_in(ids, value_set=there["track_id"].combine_chunks())))


def _full_rows(conn: Connection, snapshot: DataFrame, ids: list[str]) -> pd.DataFrame:
    """Both sides' full rows of ``ids`` merged as the comparison's frame (snapshot ``_s``,
    table ``_t``, pandas' ``_merge``)."""
    columns = [*PROFILE_INPUT_COLUMNS]
    if ids:
        snap = _semi_join(snapshot, pa.array(ids, pa.string())).select(*columns).toPandas()
    else:
        snap = snapshot.limit(0).select(*columns).toPandas()
    snap = snap.drop_duplicates("track_id", keep="last").reset_index(drop=True)
    table = table_frame_of(conn, ids)
    return snap.merge(table, on="track_id", how="outer", suffixes=("_s", "_t"), indicator=True)


def song_digests(frame: pd.DataFrame) -> np.ndarray:
    """A 64-bit digest per row of the profile inputs (the nine features, artists, artist ids,
    genres), equal exactly when :func:`_same_song` would call two versions the same song:
    NaN equals NaN, -0.0 equals 0.0, a missing list equals an empty one. The same function
    runs on the snapshot (Spark's Python workers) and the table (the driver)."""
    digest = np.zeros(len(frame), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for f in PROFILE_FEATURES:
            x = frame[f].to_numpy(dtype=np.float64) + 0.0  # -0.0 + 0.0 is 0.0
            bits = np.where(np.isnan(x), np.float64(np.nan), x).view(np.uint64)
            digest = digest * _MIX + pd.util.hash_array(bits)
        for c in _LIST_COLUMNS:
            digest = digest * _MIX + _list_digest(frame[c])
    return digest


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _list_digest(column: pd.Series) -> np.ndarray:
    """Each row's list of strings (None, NaN: empty) as a digest of its length and values."""
    values = pa.array(column.to_numpy(), type=_STRINGS, from_pandas=True)
    values = pc.fill_null(values, pa.scalar([], _STRINGS))
    length = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    # \x1f cannot be typed in a name; a list holding a null joins to null: marked apart.
    joined = pc.fill_null(pc.binary_join(values, "\x1f"), "\x00null")
    text = joined.to_numpy(zero_copy_only=False).astype(object)
    with np.errstate(over="ignore"):
        return pd.util.hash_array(text) * _MIX + length.astype(np.uint64)


_LIST_COLUMNS = ("artists", "artist_ids", "genres")
_STRINGS = pa.list_(pa.string())


def _same_song(both: pd.DataFrame) -> np.ndarray:
    """Rows of the merged frame whose snapshot and table versions are the same song: both
    present, equal features (NaN equals NaN), equal artists, artist ids and genres. The table's
    stored ``artist_keys`` are ``artist_keys(artists, artist_ids)`` (the sink derives them so),
    hence equal too."""
    same = (both["_merge"] == "both").to_numpy()
    for f in PROFILE_FEATURES:
        s = both[f"{f}_s"].to_numpy(dtype=np.float64)
        t = both[f"{f}_t"].to_numpy(dtype=np.float64)
        same &= (s == t) | (np.isnan(s) & np.isnan(t))
    for c in _LIST_COLUMNS:
        same &= _equal_lists(both[f"{c}_s"], both[f"{c}_t"])
    return same


def _equal_lists(left: pd.Series, right: pd.Series) -> np.ndarray:
    """Row by row, whether two columns of string lists (None, NaN: empty) are equal, in Arrow."""
    empty = pa.scalar([], _STRINGS)
    a = pc.fill_null(pa.array(left.to_numpy(), type=_STRINGS, from_pandas=True), empty)
    b = pc.fill_null(pa.array(right.to_numpy(), type=_STRINGS, from_pandas=True), empty)
    equal = pc.equal(pc.list_value_length(a), pc.list_value_length(b)).to_numpy(
        zero_copy_only=False
    )
    rows = np.flatnonzero(equal)
    if len(rows) == 0:
        return equal
    # With equal lengths the flattened values line up: a row is equal when all of its are.
    a, b = a.take(pa.array(rows)), b.take(pa.array(rows))
    values = pc.fill_null(pc.equal(pc.list_flatten(a), pc.list_flatten(b)), False)
    wrong = np.bincount(
        pc.list_parent_indices(a).to_numpy()[~values.to_numpy(zero_copy_only=False)],
        minlength=len(rows),
    )
    equal[rows] = wrong == 0
    return equal


def _song_dicts(frame: pd.DataFrame, suffix: str) -> list[dict[str, Any]]:
    """One side's songs of merged rows as ``songs``-row dicts (lists, not arrays)."""
    out = []
    names = ["artists", "artist_ids", "genres", *PROFILE_FEATURES]
    if suffix == "_t":
        names.append("artist_keys")
    columns = {n: frame[n if n == "artist_keys" else n + suffix].tolist() for n in names}
    for i in range(len(frame)):
        song = {n: columns[n][i] for n in names}
        for n in ("artists", "artist_ids", "genres", "artist_keys"):
            if n in song:
                song[n] = None if _missing(song[n]) else list(song[n])
        out.append(song)
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _versions(
    model: PortableModel, both: pd.DataFrame, differ: np.ndarray, suffix: str, stored_keys: bool
) -> list[tuple[np.ndarray, tuple[str, ...]] | None]:
    """One side's :func:`standardized_version` of each differing row (None: the side lacks
    the song), standardized in one call."""
    present = (both["_merge"] != ("right_only" if suffix == "_s" else "left_only")).to_numpy()
    frame = both[differ]
    here = present[differ]
    x = frame[[f + suffix for f in PROFILE_FEATURES]].to_numpy(dtype=np.float64)
    z = model.standardize(x) if len(x) else x
    songs_ = _song_dicts(frame, suffix)
    return [
        (
            z[i],
            song_artist_keys(song)
            if stored_keys
            else song_artist_keys({**song, "artist_keys": None}),
        )
        if here[i]
        else None
        for i, song in enumerate(songs_)
    ]
