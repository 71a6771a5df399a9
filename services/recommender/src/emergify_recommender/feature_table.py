"""Reading the feature table (``songs``) the stream processor writes. Read-only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from emergify_contracts.artist_profiles import ArtistProfiles
from emergify_contracts.song_schemas import recommender_columns
from emergify_contracts.tables import (
    PROFILE_SUM_COLUMNS,
    artist_profiles,
    model_versions,
    songs,
    stream_batches,
)
from emergify_recommender.records import SongRecord, as_utc

# The song fields and bookkeeping the serving layer keeps, not the table's Kafka positions
# or the stored cluster (recomputed from the model on load: it may be from an older model).
_COLUMNS = [songs.c[name] for name in recommender_columns()]
_ID_CHUNK = 500
_STREAM_CHUNK = 10_000


@dataclass(frozen=True)
class TableState:
    """What the database holds now, to compare with what is loaded."""

    songs: int
    max_table_version: int | None
    model_version: int | None
    last_batch_at: datetime | None


def _has(conn: Connection, table: sa.Table) -> bool:
    # The stream processor creates the tables; until it has, the catalog is simply empty.
    return sa.inspect(conn).has_table(table.name)


def table_state(engine: Engine) -> TableState:
    """Row count and highest version of the feature table, newest model version, and the
    time of the last committed micro-batch."""
    with engine.connect() as conn:
        count, max_tv, model_version, last_batch = 0, None, None, None
        if _has(conn, songs):
            count, max_tv = conn.execute(
                sa.select(sa.func.count(), sa.func.max(songs.c.table_version))
            ).one()
        if _has(conn, model_versions):
            model_version = conn.execute(sa.select(sa.func.max(model_versions.c.version))).scalar()
        if _has(conn, stream_batches):
            last_batch = conn.execute(
                sa.select(sa.func.max(stream_batches.c.committed_at))
            ).scalar()
    return TableState(
        songs=int(count or 0),
        max_table_version=None if max_tv is None else int(max_tv),
        model_version=None if model_version is None else int(model_version),
        last_batch_at=as_utc(last_batch),
    )


def load_all(engine: Engine) -> Iterator[SongRecord]:
    """Every song of the feature table, streamed (the caller turns them into columns in
    chunks, so a million songs are never all Python objects at once)."""
    with engine.connect() as conn:
        if not _has(conn, songs):
            return
        # The option on the statement: on the connection it would stay set (in place).
        result = conn.execute(
            sa.select(*_COLUMNS)
            .order_by(songs.c.track_id)
            .execution_options(yield_per=_STREAM_CHUNK)
        )
        for row in result.mappings():
            yield SongRecord.from_row(row)


def _load_where(engine: Engine, where: sa.ColumnElement[bool]) -> list[SongRecord]:
    """The songs matching ``where``, in table-version then id order."""
    with engine.connect() as conn:
        if not _has(conn, songs):
            return []
        result = conn.execute(
            sa.select(*_COLUMNS).where(where).order_by(songs.c.table_version, songs.c.track_id)
        )
        return [SongRecord.from_row(row) for row in result.mappings()]


def load_since(engine: Engine, table_version: int) -> list[SongRecord]:
    """Songs written by micro-batches after ``table_version``."""
    return _load_where(engine, songs.c.table_version > table_version)


def load_version(engine: Engine, table_version: int) -> list[SongRecord]:
    """Songs whose last write was the micro-batch of ``table_version`` (a catalog change
    too big to list its ids)."""
    return _load_where(engine, songs.c.table_version == table_version)


def _rows_with_ids(
    engine: Engine, columns: list[sa.Column], track_ids: Iterable[str]
) -> list[sa.RowMapping]:
    """``columns`` of the ``songs`` rows with these ids, one IN query per chunk of ids."""
    ids = sorted(set(track_ids))
    out: list[sa.RowMapping] = []
    with engine.connect() as conn:
        if not ids or not _has(conn, songs):
            return out
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            result = conn.execute(sa.select(*columns).where(songs.c.track_id.in_(chunk)))
            out.extend(result.mappings())
    return out


def load_ids(engine: Engine, track_ids: Iterable[str]) -> list[SongRecord]:
    """The songs with these ids (ids not in the table are skipped)."""
    return [SongRecord.from_row(row) for row in _rows_with_ids(engine, _COLUMNS, track_ids)]


def load_genres(engine: Engine, track_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The genres of the songs with these ids, by track id (ids not in the table are left
    out; a song without genres maps to ``()``)."""
    rows = _rows_with_ids(engine, [songs.c.track_id, songs.c.genres], track_ids)
    return {row["track_id"]: tuple(row["genres"] or ()) for row in rows}


def load_profiles(
    engine: Engine,
    model_version: int,
    keys: Iterable[str] | None = None,
    since_table_version: int | None = None,
) -> ArtistProfiles | None:
    """The ``artist_profiles`` rows of ``model_version`` (only ``keys``, or only rows written
    after ``since_table_version``, when given) as sums and counts; None when the model
    version has no rows at all and none were asked for by key (a model published before
    profiles existed: the index then ranks by audio only)."""
    columns = [artist_profiles.c.artist_key, artist_profiles.c.song_count]
    columns += [artist_profiles.c[c] for c in PROFILE_SUM_COLUMNS]
    query = sa.select(*columns).where(artist_profiles.c.model_version == model_version)
    if since_table_version is not None:
        query = query.where(artist_profiles.c.table_version > since_table_version)
    rows: list[sa.Row] = []
    with engine.connect() as conn:
        if not _has(conn, artist_profiles):
            return None
        if keys is None:
            rows = list(conn.execute(query.order_by(artist_profiles.c.artist_key)))
        else:
            wanted = sorted(set(keys))
            for start in range(0, len(wanted), _ID_CHUNK):
                chunk = wanted[start : start + _ID_CHUNK]
                rows += conn.execute(query.where(artist_profiles.c.artist_key.in_(chunk)))
    if not rows and keys is None and since_table_version is None:
        return None
    width = len(PROFILE_SUM_COLUMNS)
    return ArtistProfiles(
        tuple(str(r[0]) for r in rows),
        np.array([r[2:] for r in rows], dtype=np.float64).reshape(len(rows), width),
        np.array([r[1] for r in rows], dtype=np.int64),
    )
