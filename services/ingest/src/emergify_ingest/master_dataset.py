"""The master dataset: every accepted song, appended as immutable Parquet files.

It is the batch layer's input and the system's memory: a song the ingest acknowledged is in
here even if the broker (in-memory in the embedded stack) loses it. One file per accepted
chunk, laid out as :mod:`emergify_contracts.lake` says, written to a ``.tmp`` name, fsynced
and renamed, so readers never see half a file. The latest version of a track id follows
:mod:`emergify_contracts.versions`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emergify_contracts import lake
from emergify_contracts.song import Song
from emergify_contracts.song_schemas import arrow_schema
from emergify_contracts.versions import LAKE_POSITION, arrow_sort_keys

#: Columns of every master-dataset file: each Song field, then the provenance columns.
SCHEMA: pa.Schema = arrow_schema()

#: Columns with few distinct values, dictionary-encoded in the Parquet files. The others
#: (ids, names, audio features) are nearly all distinct: a dictionary costs time and bytes.
DICTIONARY_COLUMNS: tuple[str, ...] = tuple(
    name
    for name in (
        "release_date",
        "popularity",
        "explicit",
        "genres",
        "key",
        "mode",
        "time_signature",
        "upload_id",
        "source",
        "ingested_at",
    )
    if name in SCHEMA.names
)


def lake_path(lake_uri: str) -> Path:
    """The local directory of ``lake_uri``; other schemes are refused with the reason."""
    path = lake.local_path(lake_uri)
    if path is None:
        raise ValueError(
            f"EMERGIFY_LAKE_URI={lake_uri!r}: the ingest service supports only local lake paths "
            "in this version (a directory or file:// URI), not "
            f"{lake.scheme(lake_uri)}://; point it at a local or mounted directory"
        )
    return path


def songs_table(
    songs: Sequence[Song],
    rows: Sequence[int],
    *,
    upload_id: str,
    source: str,
    ingested_at: datetime,
) -> pa.Table:
    """One chunk of accepted songs as an Arrow table in :data:`SCHEMA`."""
    columns: dict[str, list[object]] = {
        name: [getattr(s, name) for s in songs] for name in Song.model_fields
    }
    n = len(songs)
    columns["upload_id"] = [upload_id] * n
    columns["source"] = [source] * n
    columns["ingested_at"] = [ingested_at] * n
    columns["row"] = list(rows)
    return pa.table(columns, schema=SCHEMA)


class MasterDataset:
    """Appends chunks of accepted songs to the lake at ``lake_uri`` (local paths only)."""

    def __init__(self, lake_uri: str) -> None:
        self.root = lake_path(lake_uri)
        self.songs_dir = self.root / lake.SONGS_DIR

    def prepare(self) -> None:
        """Create the songs directory if it is missing, and warm up pyarrow."""
        # pyarrow imports pandas on its first conversion from Python objects; paying that at
        # start-up keeps the first upload as quick as the others.
        SCHEMA.empty_table().to_pylist()
        pa.array([datetime(2000, 1, 1, tzinfo=UTC)], type=pa.timestamp("us", tz="UTC"))
        self.songs_dir.mkdir(parents=True, exist_ok=True)

    def check_writable(self) -> str | None:
        """None when a file can be created in the songs directory, else the reason it cannot."""
        probe = self.songs_dir / lake.tmp_name(f".health-{os.getpid()}")
        try:
            self.songs_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            return f"{self.songs_dir}: {exc.strerror or exc}"
        return None

    def append(
        self,
        songs: Sequence[Song],
        rows: Sequence[int],
        *,
        upload_id: str,
        chunk: int,
        source: str,
        ingested_at: datetime,
    ) -> Path:
        """Write one chunk durably and atomically; returns the file's path."""
        table = songs_table(
            songs, rows, upload_id=upload_id, source=source, ingested_at=ingested_at
        )
        return self.write(table, upload_id=upload_id, chunk=chunk, ingested_at=ingested_at)

    def append_table(
        self,
        songs: pa.Table,
        *,
        upload_id: str,
        chunk: int,
        source: str,
        ingested_at: datetime,
    ) -> Path:
        """Write one chunk of accepted songs given as a table (the song columns and ``row``)
        durably and atomically; returns the file's path."""
        n = songs.num_rows
        columns = {name: songs.column(name) for name in songs.column_names}
        # The same value on every row: repeated by Arrow, not built from a Python list.
        for name, value in (
            ("upload_id", upload_id),
            ("source", source),
            ("ingested_at", ingested_at),
        ):
            columns[name] = pa.repeat(pa.scalar(value, SCHEMA.field(name).type), n)
        table = pa.table({name: columns[name] for name in SCHEMA.names}).cast(SCHEMA)
        return self.write(table, upload_id=upload_id, chunk=chunk, ingested_at=ingested_at)

    def write(self, table: pa.Table, *, upload_id: str, chunk: int, ingested_at: datetime) -> Path:
        """Write ``table`` (in :data:`SCHEMA`) as one file, durably and atomically."""
        directory = self.songs_dir / lake.partition_name(ingested_at)
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / lake.file_name(upload_id, chunk)
        tmp = final.with_name(lake.tmp_name(final.name))
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(
                    table, fh, compression="zstd", use_dictionary=list(DICTIONARY_COLUMNS)
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(directory)
        return final


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def master_dataset_files(lake_uri: str) -> list[Path]:
    """Every complete file of the master dataset, oldest partition first."""
    lake_path(lake_uri)  # refuses a remote lake with the reason
    return lake.song_files(lake_uri)


def read_master_dataset(lake_uri: str) -> pa.Table:
    """The whole master dataset as one table in :data:`SCHEMA` (every version of every song)."""
    files = master_dataset_files(lake_uri)
    if not files:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files])


def latest_versions(table: pa.Table) -> pa.Table:
    """One row per track id: its latest version (:mod:`emergify_contracts.versions`)."""
    if table.num_rows == 0:
        return table
    ordered = table.sort_by(arrow_sort_keys(LAKE_POSITION))
    ids = ordered.column("track_id").combine_chunks()
    # After the sort, a row is the latest version when its id differs from the previous row's.
    changed = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    return ordered.filter(pa.concat_arrays([pa.array([True]), changed]))
