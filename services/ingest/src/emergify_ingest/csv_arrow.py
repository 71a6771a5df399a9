"""A whole CSV upload read by pyarrow's CSV reader and validated column by column.

The fastest path for an upload, and an exact one: it gives the per-row path's verdicts, row
numbers and messages (:func:`~emergify_ingest.upload.csv_candidates`) or it does not run.
:func:`read_upload` takes the upload only when pyarrow reads it the way Python's ``csv``
module does (checked here, and by a differential fuzz test): valid UTF-8 (a leading BOM
dropped, as ``utf-8-sig`` does), a header line whose cells Python's reader gives too, every
record with as many cells as the header, no field over ``max_field_bytes``, and at most
``max_rows`` records. Quoting rules are the same in both readers (a quote opens a field only at
its start, ``""`` is a quote inside one, text after a closing quote is kept; quoted line breaks
stay in the value; blank lines are skipped). The whole file is one pyarrow block: quoted line
breaks split across block boundaries were seen to lose their ``\\n``. Anything else (Windows-1252
text, ragged rows, an unreadable header, a whole-file problem) returns None and the upload
goes through :func:`~emergify_ingest.csv_columns.column_chunks`, which also raises the
whole-file problems with their messages.

Validation is :mod:`emergify_ingest.csv_columns`' kernels over the whole file's columns; rows
they do not pass get :func:`~emergify_contracts.song.row_to_song`'s verdict, one by one.
Duplicate track ids are found with a hash of the ids, not a loop.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import structlog

from emergify_contracts.song import Song, column_fields, detect_layout
from emergify_ingest.csv_columns import (
    _LAKE_SONG_FIELDS,
    _SONG_SCHEMA,
    ColumnChunk,
    _Block,
    _per_row,
    _record,
    _songs_to_table,
    _validate_block,
    song_json,
)
from emergify_ingest.upload import _ID_COLUMNS, CsvPlan, UploadLedger, _sniff

log = structlog.get_logger()

#: Bytes of the file's start read by Python's ``csv`` reader for the header line.
HEADER_BYTES = 256 * 1024


@dataclass
class ArrowUpload:
    """An upload pyarrow read exactly as the per-row path would: every record, every cell as
    text, in file order (row ``i + 1`` is the table's row ``i``)."""

    plan: CsvPlan
    header: list[str]
    table: pa.Table
    #: Whether the file holds a NUL character anywhere (rows holding one are refused).
    has_nul: bool = True


def _utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8, checked by Arrow without decoding it into Python."""
    offsets = pa.array([0, len(data)], pa.int32())
    text = pa.Array.from_buffers(pa.string(), 1, [None, offsets.buffers()[1], pa.py_buffer(data)])
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _python_header(data: bytes) -> list[str] | None:
    """The header record as Python's ``csv`` reader gives it, or None when it is not a
    complete record within the first :data:`HEADER_BYTES` (or the file's first line is blank,
    which the per-row path reads as a missing header)."""
    head = data[:HEADER_BYTES]
    whole = len(head) == len(data)
    text = codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        # A second record (or the end of the file) proves the header record is complete.
        if not whole and next(reader, None) is None:
            return None
    except csv.Error:
        return None
    if not header:
        return None
    return header


def _fallback(reason: str) -> None:
    log.info("csv left to the csv module's reader", reason=reason)


def read_upload(data: bytes, max_rows: int, max_field_bytes: int) -> ArrowUpload | None:
    """``data`` read by pyarrow, or None when the csv module's reader must read it (see the
    module's docstring). Raises the :class:`ProblemError` of plainly-not-CSV files as the
    per-row path does (binary, compressed, UTF-16, JSON, empty)."""
    _sniff(io.BytesIO(data))
    if not _utf8(data):
        return _fallback("not UTF-8")
    body = data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data
    header = _python_header(body)
    if header is None:
        return _fallback("header line")
    try:
        layout = detect_layout(header)
    except ValueError:
        return _fallback("layout")
    names = [_norm(h) for h in header if _norm(h)]
    if len(set(names)) != len(names) or len(set(header)) != len(header):
        # The per-row path refuses the file, or pyarrow could not name each column apart.
        return _fallback("repeated column")
    try:
        table = pacsv.read_csv(
            pa.py_buffer(body),
            read_options=pacsv.ReadOptions(
                use_threads=False,
                # One block: records never straddle a block boundary (see the docstring).
                block_size=max(len(body), 1024) + 1,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=",",
                quote_char='"',
                double_quote=True,
                escape_char=False,
                newlines_in_values=True,
                ignore_empty_lines=True,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowIndexError) as exc:
        return _fallback(f"pyarrow: {str(exc)[:200]}")
    if table.column_names != header:
        return _fallback("header differs")
    if table.num_rows == 0 or table.num_rows > max_rows:
        return _fallback("row count")
    for column in table.columns:
        if len(column) and pc.max(pc.binary_length(column)).as_py() > max_field_bytes:
            return _fallback("a field over max_field_bytes")
    wanted = _ID_COLUMNS[layout]
    id_columns = tuple(h for h in header if _norm(h) in wanted)
    plan = CsvPlan("utf-8-sig", layout, table.num_rows, id_columns)
    return ArrowUpload(plan, header, table, has_nul=b"\x00" in body)


def _norm(column: str) -> str:
    return column.replace("\ufeff", "").strip().lower()


def _first_occurrence(ids: pa.Array) -> np.ndarray:
    """For each position of ``ids``, the position where its id first appears."""
    codes = ids.dictionary_encode().indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    return first[codes]


def arrow_chunks(
    upload: ArrowUpload, ledger: UploadLedger, chunk_rows: int
) -> Iterator[ColumnChunk]:
    """Every record of ``upload`` validated into ``ledger`` (same verdicts, rows and messages as
    the per-row path); accepted songs yielded as tables of at most ``chunk_rows`` rows, in row
    order."""
    accepted = validate_table(upload, ledger)
    # The events' song JSON for the whole upload at once: kernels pay their per-call cost once.
    songs = song_json(accepted) if accepted.num_rows else None
    for index, start in enumerate(range(0, accepted.num_rows, chunk_rows)):
        chunk_songs = songs.slice(start, chunk_rows) if songs is not None else None
        yield ColumnChunk(index, accepted.slice(start, chunk_rows), chunk_songs)


def validate_table(upload: ArrowUpload, ledger: UploadLedger) -> pa.Table:
    """The accepted songs of ``upload`` (the lake's song columns and ``row``), in row order;
    every rejected record is reported to ``ledger``, in row order."""
    table, plan, header = upload.table, upload.plan, upload.header
    n = table.num_rows
    raw: dict[str, pa.Array] = {}
    for i, name in enumerate(column_fields(header, plan.layout)):
        if name is not None and name != "track_uri":
            raw[name] = table.column(i).combine_chunks()
    block = _Block(raw, n, plan.layout)
    ok = np.array(_validate_block(block, _LAKE_SONG_FIELDS).to_numpy(zero_copy_only=False))
    for column in table.columns if upload.has_nul else ():
        # A NUL anywhere in a row (an unmapped column too) is the per-row path's to refuse.
        nul = pc.match_substring(column, "\x00")
        if pc.any(nul).as_py():
            ok &= ~nul.to_numpy(zero_copy_only=False)
    slow = np.flatnonzero(~ok)
    # The per-row path's verdict on every row the kernels did not pass.
    rejected: list[tuple[int, str | None, list[str]]] = []
    slow_songs: list[Song] = []
    slow_index: list[int] = []
    if len(slow):
        indices = pa.array(slow, pa.int64())
        cells = [c.take(indices).to_pylist() for c in table.columns]
        for i, row_cells in zip(slow.tolist(), zip(*cells, strict=True), strict=True):
            track_id, outcome = _per_row(_record(header, list(row_cells)), plan)
            if isinstance(outcome, Song):
                slow_songs.append(outcome)
                slow_index.append(i)
            else:
                rejected.append((i + 1, track_id, outcome))
    fast = np.flatnonzero(ok)
    parts = []
    if len(fast):
        take = pa.array(fast, pa.int64())
        columns = {f.name: block.values[f.name].take(take) for f in _LAKE_SONG_FIELDS}
        columns["row"] = pa.array(fast + 1, pa.int64())
        parts.append(pa.table(columns).cast(_SONG_SCHEMA))
    if slow_songs:
        parts.append(_songs_to_table(slow_songs, [i + 1 for i in slow_index]))
    if not parts:
        valid = _SONG_SCHEMA.empty_table()
    elif len(parts) == 1:
        valid = parts[0]
    else:
        valid = pa.concat_tables(parts).sort_by("row").combine_chunks()
    # The first valid row of a track id is accepted; later valid rows with that id are not.
    first = _first_occurrence(valid.column("track_id").combine_chunks())
    repeated = np.flatnonzero(first != np.arange(valid.num_rows))
    if len(repeated):
        rows = valid.column("row").to_numpy()
        ids = valid.column("track_id").take(pa.array(repeated)).to_pylist()
        for at, track_id in zip(repeated.tolist(), ids, strict=True):
            rejected.append(
                (
                    int(rows[at]),
                    track_id,
                    [
                        f"track_id {track_id} already appears in row {int(rows[first[at]])} "
                        "of this upload"
                    ],
                )
            )
        keep = np.ones(valid.num_rows, dtype=bool)
        keep[repeated] = False
        valid = valid.filter(pa.array(keep))
    for row, track_id, errors in sorted(rejected, key=lambda r: r[0]):
        ledger.reject(row, track_id, errors)
    ledger.accepted += valid.num_rows
    return valid
