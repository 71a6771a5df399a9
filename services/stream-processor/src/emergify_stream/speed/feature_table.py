"""The speed layer's sink: micro-batches of clean songs into the ``songs`` feature table.

Exactly-once: the upserts and the ``(query_name, batch_id)`` marker commit in one transaction,
and a batch whose marker exists writes nothing; events are at-least-once; an unreachable
database is retried with backoff. Design:
docs/stream-processor.md, "The sink".
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from emergify_contracts.artist_profiles import SongChange, apply_song_changes, artist_keys
from emergify_contracts.events import CatalogChange, DeadLetter
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.song_fields import fields_in
from emergify_contracts.song_schemas import batch_columns
from emergify_contracts.tables import (
    artist_profiles,
    database_unavailable,
    songs,
    stream_batches,
)
from emergify_contracts.versions import newer_than
from emergify_stream.artist_rows import (
    has_profiles,
    note_song,
    read_profiles,
    standardized_versions,
    table_songs,
)
from emergify_stream.model_registry import CLUSTER_WRITE_LOCK, ModelRegistry
from emergify_stream.publisher import EventPublisher

log = structlog.get_logger()

_KINDS = ("text", "text_list", "integer", "boolean", "number")

_BY_KIND = {k: tuple(f.name for f in fields_in("table") if f.kind == k) for k in _KINDS}
_LIST_COLUMNS = _BY_KIND["text_list"]
_INT_COLUMNS = (*_BY_KIND["integer"], "kafka_partition")
_TEXT_COLUMNS = (*_BY_KIND["text"], "upload_id", "source")
_BOOL_COLUMNS = _BY_KIND["boolean"]
_FLOAT_COLUMNS = _BY_KIND["number"]
#: Columns of a clean micro-batch frame (the speed layer's output).
BATCH_COLUMNS: tuple[str, ...] = batch_columns()


class DatabaseUnavailableError(RuntimeError):
    """The database stayed unreachable longer than the sink's retry budget (or the
    processor is stopping); the micro-batch is left uncommitted and re-runs next time."""


@dataclass(frozen=True)
class RetryPolicy:
    """How the sink waits for a database that went away: exponential backoff from
    ``initial_seconds`` up to ``max_seconds`` between attempts, for at most
    ``give_up_after_seconds`` (0 = until it answers)."""

    initial_seconds: float = 0.2
    max_seconds: float = 5.0
    give_up_after_seconds: float = 0.0


@dataclass(frozen=True)
class BatchResult:
    """What one call of :meth:`FeatureTableSink.write` did."""

    query_name: str
    batch_id: int
    applied: bool  # False when the batch had been applied before (a replay)
    table_version: int
    upserted_ids: list[str]
    songs: int
    dead_letters: int
    #: Artist keys whose ``artist_profiles`` rows this batch changed (empty on a replay or
    #: before the first model), and the model version of those rows.
    artists_changed: list[str] = field(default_factory=list)
    profiles_model_version: int | None = None


def _scalar(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value


#: numpy dtype kinds whose ``tolist()`` already gives the Python type of a converter.
_NATIVE_KINDS: dict[Callable[[Any], Any], str] = {int: "iu", bool: "b", float: "f"}


def _column(frame: pd.DataFrame, name: str, convert: Callable[[Any], Any]) -> list[Any]:
    """One column as Python values: nulls as None, the others through ``convert``."""
    if name not in frame:
        return [None] * len(frame)
    series = frame[name]
    if series.dtype.kind in _NATIVE_KINDS.get(convert, "") and not series.isna().any():
        return series.tolist()
    return [None if (v := _scalar(x)) is None else convert(v) for x in series.tolist()]


def _text_list(value: Any) -> list[str]:
    return [] if value is None or value is pd.NA else [str(v) for v in value]


def frame_to_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a clean micro-batch frame as ``songs`` column dicts (without cluster and
    versions), with nulls as None, lists as lists and timestamps in UTC.

    Built column by column (one conversion per column, not per cell), then zipped into rows.
    """
    columns: dict[str, list[Any]] = {}
    for name in _TEXT_COLUMNS:
        columns[name] = _column(frame, name, lambda v: v)
    for name in _LIST_COLUMNS:
        values = frame[name].tolist() if name in frame else [None] * len(frame)
        columns[name] = [_text_list(v) for v in values]
    for name in (*_INT_COLUMNS, "kafka_offset"):
        columns[name] = _column(frame, name, int)
    for name in _BOOL_COLUMNS:
        columns[name] = _column(frame, name, bool)
    for name in _FLOAT_COLUMNS:
        columns[name] = _column(frame, name, float)
    columns["artist_keys"] = [
        list(artist_keys(a, i))
        for a, i in zip(columns["artists"], columns["artist_ids"], strict=True)
    ]
    # Naive timestamps are UTC (the session's time zone); aware ones are converted.
    columns["ingested_at"] = list(
        pd.DatetimeIndex(pd.to_datetime(frame["ingested_at"], utc=True)).to_pydatetime()
    )
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def upsert_statement(dialect_name: str) -> sa.Insert:
    """``INSERT .. ON CONFLICT (track_id) DO UPDATE`` that only overwrites a stored song with
    a newer version (:func:`emergify_contracts.versions.newer_than`)."""
    dialect_insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    stmt = dialect_insert(songs)
    newer = newer_than(stmt.excluded, songs.c)
    return stmt.on_conflict_do_update(
        index_elements=[songs.c.track_id],
        set_={c.name: stmt.excluded[c.name] for c in songs.columns if c.name != "track_id"},
        where=newer,
    )


def profile_upsert_statement(dialect_name: str) -> sa.Insert:
    """``INSERT .. ON CONFLICT (model_version, artist_key) DO UPDATE`` of whole rows (the
    sink computes the new sums and counts from the stored ones in its transaction)."""
    dialect_insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    stmt = dialect_insert(artist_profiles)
    keys = ("model_version", "artist_key")
    return stmt.on_conflict_do_update(
        index_elements=[artist_profiles.c[k] for k in keys],
        set_={c.name: stmt.excluded[c.name] for c in artist_profiles.columns if c.name not in keys},
    )


def _marker(conn: Connection, query_name: str, batch_id: int) -> int | None:
    return conn.execute(
        sa.select(stream_batches.c.table_version).where(
            stream_batches.c.query_name == query_name, stream_batches.c.batch_id == batch_id
        )
    ).scalar()


def table_version(conn: Connection) -> int:
    """The feature table's version: the highest committed batch marker's (0 when empty)."""
    return conn.execute(sa.select(sa.func.max(stream_batches.c.table_version))).scalar() or 0


def song_count(conn: Connection) -> int:
    """Rows in the feature table."""
    return conn.execute(sa.select(sa.func.count()).select_from(songs)).scalar_one()


class FeatureTableSink:
    """Applies clean micro-batches to the feature table, once each."""

    def __init__(
        self,
        engine: Engine,
        registry: ModelRegistry,
        publisher: EventPublisher | None = None,
        on_commit: Callable[[BatchResult], None] | None = None,
        retry: RetryPolicy | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.publisher = publisher
        self.on_commit = on_commit
        self.retry = retry or RetryPolicy()
        self.stopping = stopping or threading.Event()
        self._upsert = upsert_statement(engine.dialect.name)
        self._profile_upsert = profile_upsert_statement(engine.dialect.name)
        self.last_result: BatchResult | None = None
        #: Why the current batch is waiting for the database (None when it is not).
        self.waiting_for_database: str | None = None

    def applied(self, query_name: str, batch_id: int) -> bool:
        """Whether this batch already committed."""
        with self.engine.connect() as conn:
            return _marker(conn, query_name, batch_id) is not None

    def write(
        self,
        query_name: str,
        batch_id: int,
        frame: pd.DataFrame,
        dead_letters: list[DeadLetter] | None = None,
    ) -> BatchResult:
        """Apply one micro-batch: ``frame`` holds at most one row per track id
        (:data:`BATCH_COLUMNS`); ``dead_letters`` are the records it refused.

        While the database is unreachable the call waits and retries (see
        :class:`RetryPolicy`); it raises :class:`DatabaseUnavailableError` only when the
        retry budget runs out or the processor stops.
        """
        dead_letters = dead_letters or []
        rows = frame_to_rows(frame)
        ids = [r["track_id"] for r in rows]
        dlq_sent = False
        delay = self.retry.initial_seconds
        started = time.monotonic()
        while True:
            try:
                if dead_letters and self.publisher is not None and not dlq_sent:
                    if not self.applied(query_name, batch_id):
                        self.publisher.dead_letters(dead_letters)
                    dlq_sent = True
                applied, version, count, touched = self._commit(query_name, batch_id, rows)
                break
            except sa.exc.SQLAlchemyError as exc:
                if not database_unavailable(exc):
                    raise
                self._wait_for_database(query_name, batch_id, exc, started, delay)
                delay = min(delay * 2, self.retry.max_seconds)
        if self.waiting_for_database is not None:
            self.waiting_for_database = None
            log.info(
                "database reachable again",
                query=query_name,
                batch_id=batch_id,
                waited_seconds=round(time.monotonic() - started, 1),
            )
        result = BatchResult(
            query_name=query_name,
            batch_id=batch_id,
            applied=applied,
            table_version=version,
            upserted_ids=ids,
            songs=count,
            dead_letters=len(dead_letters),
            artists_changed=touched[1],
            profiles_model_version=touched[0],
        )
        self.last_result = result
        log.info(
            "micro-batch committed" if applied else "micro-batch replayed: already applied",
            query=query_name,
            batch_id=batch_id,
            rows=len(rows),
            dead_letters=len(dead_letters),
            table_version=version,
            songs=count,
        )
        if ids and self.publisher is not None:
            try:
                self.publisher.catalog_change(
                    CatalogChange.of_batch(
                        version,
                        ids,
                        result.artists_changed,
                        songs=count,
                        profiles_model_version=result.profiles_model_version,
                    )
                )
            except Exception:  # the table is committed; a consumer can catch up by version
                log.exception("could not publish the catalog change", table_version=version)
        if self.on_commit is not None:
            self.on_commit(result)
        return result

    def _commit(
        self, query_name: str, batch_id: int, rows: list[dict[str, Any]]
    ) -> tuple[bool, int, int, tuple[int | None, list[str]]]:
        """One transaction: the upserts, their artists' profiles and the batch marker, unless
        the marker exists. Returns (applied, table version, songs in the table, (profiles'
        model version, artist keys changed))."""
        with CLUSTER_WRITE_LOCK, self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # One writer allocates table versions at a time.
                conn.execute(sa.text("LOCK TABLE stream_batches IN EXCLUSIVE MODE"))
            stored_version = _marker(conn, query_name, batch_id)
            touched: tuple[int | None, list[str]] = (None, [])
            if stored_version is not None:
                applied, version = False, stored_version
            else:
                applied = True
                version = table_version(conn) + (1 if rows else 0)
                if rows:
                    touched = self._upsert_rows(conn, rows, version)
                conn.execute(
                    stream_batches.insert().values(
                        query_name=query_name,
                        batch_id=batch_id,
                        rows=len(rows),
                        table_version=version,
                        committed_at=datetime.now(UTC),
                    )
                )
            return applied, version, song_count(conn), touched

    def _wait_for_database(
        self, query_name: str, batch_id: int, exc: Exception, started: float, delay: float
    ) -> None:
        """Sleep ``delay`` before the next attempt, or raise when the budget is spent or the
        processor is stopping."""
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.waiting_for_database = error
        waited = time.monotonic() - started
        budget = self.retry.give_up_after_seconds
        if budget and waited + delay > budget:
            raise DatabaseUnavailableError(
                f"the database was unreachable for {waited:.0f} s; micro-batch {batch_id} "
                f"is left uncommitted: {error}"
            ) from exc
        log.warning(
            "database unreachable; the micro-batch waits and retries",
            query=query_name,
            batch_id=batch_id,
            error=error,
            retry_in_seconds=round(delay, 2),
        )
        if self.stopping.wait(delay):
            raise DatabaseUnavailableError(
                f"stopping while micro-batch {batch_id} waited for the database"
            ) from exc

    def _upsert_rows(
        self, conn: Connection, rows: list[dict[str, Any]], version: int
    ) -> tuple[int | None, list[str]]:
        model = self.registry.current(conn)
        # Before the first model there is no scaler: no profiles; the first retrain computes
        # them all. A model published before profiles existed leaves them to the next one.
        keep_profiles = model is not None and has_profiles(conn, model.version)
        ids = [r["track_id"] for r in rows]
        before = table_songs(conn, ids) if keep_profiles else {}
        if model is not None:
            features = np.array([[r[f] for f in AUDIO_FEATURES] for r in rows], dtype=float)
            clusters = [int(c) for c in model.assign(features)]
        else:
            clusters = [None] * len(rows)
        now = datetime.now(UTC)
        for row, cluster in zip(rows, clusters, strict=True):
            row.update(
                cluster=cluster,
                model_version=model.version if model is not None else None,
                table_version=version,
                updated_at=now,
            )
        conn.execute(self._upsert, rows)
        if not keep_profiles:
            return None, []
        assert model is not None
        # The ids the upsert wrote (it skips a version older than the stored one) carry this
        # batch's table version; their new values are the rows in hand. (Not RETURNING: with
        # executemany it was several times slower than the upsert itself on PostgreSQL.)
        written = set(
            conn.execute(
                sa.select(songs.c.track_id).where(songs.c.table_version == version)
            ).scalars()
        )
        after = {r["track_id"]: r for r in rows if r["track_id"] in written}
        return model.version, self._update_profiles(conn, model, after, before, version)

    def _update_profiles(
        self,
        conn: Connection,
        model: PortableModel,
        after: dict[str, dict[str, Any]],
        before: dict[str, Any],
        version: int,
    ) -> list[str]:
        """Move each written song's contribution from its old version to its new one in
        ``artist_profiles`` (:func:`apply_song_changes`), in the caller's transaction.
        ``after`` holds the songs the upsert wrote, by track id; the songs it skipped (an
        older version than the stored one) change nothing."""
        old_rows = [before.get(track_id) for track_id in after]
        olds = standardized_versions(model, [r for r in old_rows if r is not None])
        news = standardized_versions(model, list(after.values()))
        touched: set[str] = set()
        changes = []
        old_versions = iter(olds)
        for old, new in zip(old_rows, news, strict=True):
            before_version = None if old is None else next(old_versions)
            if before_version is not None:
                touched.update(before_version[1])
            touched.update(new[1])
            changes.append(SongChange(before_version, new))
        if not changes:
            return []
        current = read_profiles(conn, model.version, sorted(touched))
        for song in after.values():
            note_song(current, song)
        try:
            current.profiles = apply_song_changes(current.profiles, changes)
        except ValueError:
            # Rows out of step with the table (edited by hand?): the stream goes on, the
            # next retrain recomputes every profile.
            log.exception("artist profiles out of step; left to the next retrain")
            return []
        records = current.records(model.version, version)
        conn.execute(self._profile_upsert, records)
        return sorted(touched)
