"""Artist profile rows in the feature table's database: reading, writing and moving a song's
contribution between versions — what both the batch layer (after its Spark SQL recompute) and
the speed layer's sink (inside each micro-batch's transaction) do with ``artist_profiles``.
The maths is :mod:`emergify_contracts.artist_profiles`; the Spark SQL recompute is
:mod:`emergify_stream.batch.artist_profiles`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from emergify_contracts.artist_profiles import (
    PROFILE_FEATURES,
    ArtistProfiles,
    artist_credits,
    artist_keys,
)
from emergify_contracts.model import PortableModel
from emergify_contracts.tables import PROFILE_SUM_COLUMNS, artist_profiles, songs


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


def table_rows(conn: Connection, where: Any) -> dict[str, Any]:
    cols = [songs.c.track_id, songs.c.artists, songs.c.artist_ids, songs.c.artist_keys]
    cols += [songs.c.genres, *(songs.c[f] for f in PROFILE_FEATURES)]
    return {r.track_id: r._mapping for r in conn.execute(sa.select(*cols).where(where))}


def _table_columns() -> list[Any]:
    cols = [songs.c.track_id, songs.c.artists, songs.c.artist_ids, songs.c.artist_keys]
    return [*cols, songs.c.genres, *(songs.c[f] for f in PROFILE_FEATURES)]


def table_frame(conn: Connection, where: Any) -> pd.DataFrame:
    """The ``songs`` rows matching ``where`` as one frame (the columns of :func:`table_rows`),
    read in chunks: a million rows as dicts of row mappings would not fit a small driver."""
    chunks = list(table_frames(conn, where))
    if not chunks:
        names = [c.name for c in _table_columns()]
        return pd.DataFrame({n: pd.Series(dtype=object) for n in names}).astype(
            {f: np.float64 for f in PROFILE_FEATURES}
        )
    return pd.concat(chunks, ignore_index=True)


def table_frames(conn: Connection, where: Any, chunk: int = 50_000) -> Iterator[pd.DataFrame]:
    """:func:`table_frame`'s rows one frame of up to ``chunk`` rows at a time."""
    cols = _table_columns()
    names = [c.name for c in cols]
    # On the statement, not the connection: Connection.execution_options changes the
    # connection in place, and every later statement of the transaction (the profiles'
    # DELETE) would then go through a PostgreSQL server-side cursor, which refuses it.
    result = conn.execute(sa.select(*cols).where(where).execution_options(yield_per=chunk))
    for part in result.partitions():
        yield pd.DataFrame.from_records(part, columns=names)


def table_frame_of(conn: Connection, ids: Sequence[str]) -> pd.DataFrame:
    """:func:`table_frame` of the rows of ``ids``."""
    frames = [
        table_frame(conn, songs.c.track_id.in_(list(ids[start : start + 500])))
        for start in range(0, len(ids), 500)
    ]
    return pd.concat(frames, ignore_index=True) if frames else table_frame(conn, sa.false())


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
        out |= table_rows(conn, condition if where is None else condition & where)
    return out


def standardized_version(model: PortableModel, row: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """A song's standardized features under ``model`` and its artist keys."""
    x = np.array([[row[f] for f in PROFILE_FEATURES]], dtype=np.float64)
    return model.standardize(x)[0], song_artist_keys(row)


def standardized_versions(
    model: PortableModel, rows: Sequence[Any]
) -> list[tuple[np.ndarray, tuple[str, ...]]]:
    """:func:`standardized_version` of many rows, standardized in one array operation."""
    if not rows:
        return []
    x = np.array([[row[f] for f in PROFILE_FEATURES] for row in rows], dtype=np.float64)
    z = model.standardize(x)
    return [(z[i], song_artist_keys(row)) for i, row in enumerate(rows)]
