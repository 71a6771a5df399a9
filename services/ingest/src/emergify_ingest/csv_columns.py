"""CSV validation a block of rows at a time, with Arrow compute kernels.

Records are read by the same ``csv`` reader as :func:`~emergify_ingest.upload.csv_candidates`
(so row numbers and cells are the same by construction), a block of rows becomes one Arrow
column per field, and each field's rules (:data:`~emergify_contracts.song_fields.SONG_FIELDS`)
run as kernels over the column. A row that every kernel passes is accepted without building a
:class:`~emergify_contracts.song.Song`; any other row (a rule broken, or text the kernels do
not read exactly as the per-row path would: odd whitespace, quoted list items, exotic number
forms) goes through :func:`~emergify_contracts.song.row_to_song`, which gives the verdict and
the messages. The kernels only decide which rows need that; they never reject on their own.

Accepted rows leave as Arrow tables (:class:`ColumnChunk`), written to the master dataset and
turned into songs-topic events without a Python object per song.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import TypeAdapter

from emergify_contracts.events import SCHEMA_VERSION
from emergify_contracts.song import Layout, RowError, Song, column_fields, row_to_song
from emergify_contracts.song_fields import SongField, fields_in
from emergify_contracts.song_schemas import arrow_schema
from emergify_ingest.upload import _NUL_ERROR, CsvPlan, UploadLedger, _open_text, _raw_track_id

#: Rows validated together.
BLOCK_ROWS = 5_000

_LAKE_SONG_FIELDS = fields_in("lake")
_EVENT_FIELDS = fields_in("event")
_SONG_SCHEMA = pa.schema(
    [f for f in arrow_schema() if f.name in {s.name for s in _LAKE_SONG_FIELDS}]
    + [pa.field("row", pa.int64(), nullable=False)]
)
# Every character Python's str.strip() removes (str.isspace(): ASCII and Unicode spaces), so
# trimming with it is exactly the per-row path's strip.
_SPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
# Numbers the kernels read exactly as float() does; other forms (nan, inf, 1_000, ...) go
# to the per-row path.
_DECIMAL = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"
_WHOLE = r"^[+-]?[0-9]{1,15}$"
_BOOL_TEXT = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# Kaggle's "['A', 'B']" with plain items; items quoted with " or holding \ go per row.
_SIMPLE_BRACKETED = r"^\[('[^'\\\"]*'(, '[^'\\\"]*')*)?\]$"


@dataclass
class ColumnChunk:
    """Accepted songs of one chunk as an Arrow table: the lake's song columns and ``row``."""

    index: int
    table: pa.Table
    #: The rows' event ``song`` JSON (:func:`song_json`), when built for the whole upload.
    songs: pa.Array | None = None

    @property
    def rows(self) -> list[int]:
        """Row numbers in the upload."""
        return self.table.column("row").to_pylist()

    def __len__(self) -> int:
        return self.table.num_rows


def _strip(column: pa.Array) -> pa.Array:
    return pc.utf8_trim(column, _SPACE)


def _null_if_empty(column: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _all(masks: Sequence[pa.Array], length: int) -> pa.Array:
    ok = pa.array([True] * length)
    for mask in masks:
        ok = pc.and_kleene(ok, pc.fill_null(mask, False))
    return ok


class _Block:
    """One block of regular rows (as many cells as the header has columns), by column."""

    def __init__(self, raw: dict[str, pa.Array], n: int, layout: Layout) -> None:
        self.n = n
        self.layout = layout
        #: Field -> the text of its column (the mapped cells of every row).
        self.raw = raw
        self.masks: list[pa.Array] = []
        self.values: dict[str, pa.Array] = {}

    @classmethod
    def from_cells(cls, cells: list[list[str]], mapping: dict[str, int], layout: Layout) -> _Block:
        """A block of rows given as lists of cells (``mapping``: field -> cell index)."""
        by_column = list(zip(*cells, strict=True)) if cells else []
        raw = {
            name: pa.array(by_column[i], pa.string()) for name, i in mapping.items() if by_column
        }
        return cls(raw, len(cells), layout)

    def _check(self, mask: pa.Array) -> None:
        self.masks.append(mask)

    def text(self, f: SongField) -> None:
        raw = self.raw.get(f.name)
        if raw is None:
            if f.required:
                self._check(pa.array([False] * self.n))
            self.values[f.name] = pa.nulls(self.n, pa.string())
            return
        text = _strip(raw)
        length = pc.utf8_length(text)
        if f.required:
            self._check(pc.greater(length, 0))
        if f.max_length is not None:
            self._check(pc.less_equal(length, f.max_length))
        if f.pattern is not None:
            self._check(pc.or_(pc.equal(length, 0), pc.match_substring_regex(text, f.pattern)))
        self.values[f.name] = text if f.required else _null_if_empty(text)

    def number(self, f: SongField) -> None:
        raw = self.raw.get(f.name)
        if raw is None:
            if f.required:
                self._check(pa.array([False] * self.n))
            self.values[f.name] = pa.nulls(
                self.n, pa.float64() if f.kind == "number" else pa.int64()
            )
            return
        text = _strip(raw)
        empty = pc.equal(text, "")
        pattern = _DECIMAL if f.kind == "number" else _WHOLE
        readable = pc.match_substring_regex(text, pattern)
        self._check(pc.or_(readable, pc.and_(empty, pa.scalar(not f.required))))
        safe = pc.if_else(readable, text, pa.scalar(None, pa.string()))
        kind = pa.float64() if f.kind == "number" else pa.int64()
        value = pc.cast(safe, kind)
        checks = []
        if f.kind == "number":
            checks.append(pc.is_finite(value))
        if f.minimum is not None:
            checks.append(pc.greater_equal(value, pa.scalar(f.minimum, kind)))
        if f.maximum is not None:
            checks.append(pc.less_equal(value, pa.scalar(f.maximum, kind)))
        for check in checks:
            self._check(pc.or_kleene(pc.is_null(value), check))
        self.values[f.name] = value

    def boolean(self, f: SongField) -> None:
        raw = self.raw.get(f.name)
        if raw is None:
            self.values[f.name] = pa.nulls(self.n, pa.bool_())
            return
        text = pc.utf8_lower(_strip(raw))
        true = pc.is_in(text, pa.array([k for k, v in _BOOL_TEXT.items() if v]))
        false = pc.is_in(text, pa.array([k for k, v in _BOOL_TEXT.items() if not v]))
        self._check(pc.or_(pc.or_(true, false), pc.equal(text, "")))
        self.values[f.name] = pc.if_else(
            true, True, pc.if_else(false, pa.scalar(False), pa.scalar(None, pa.bool_()))
        )

    def text_list(self, f: SongField, split: pa.Array | None) -> None:
        if split is None:
            if f.min_items:
                self._check(pa.array([False] * self.n))
            self.values[f.name] = pa.array([[]] * self.n, pa.list_(pa.string()))
            return
        counts = pc.list_value_length(split)
        if f.min_items:
            self._check(pc.greater_equal(counts, f.min_items))
        if f.max_length is not None:
            self._check(pc.less_equal(counts, f.max_length))
        if f.pattern is not None:
            items = pc.list_flatten(split)
            bad_items = pc.invert(pc.match_substring_regex(items, f.pattern))
            parents = pc.list_parent_indices(split)
            bad_rows = pc.unique(pc.filter(parents, bad_items))
            self._check(pc.invert(pc.is_in(pa.array(range(self.n), pa.int64()), bad_rows)))
        self.values[f.name] = split

    def split(self, name: str) -> pa.Array | None:
        """The list field ``name`` as list<string>, items trimmed and empties dropped, the way
        :func:`~emergify_contracts.song._split_list` splits it (other forms go per row)."""
        raw = self.raw.get(name)
        if raw is None:
            return None
        text = _strip(raw)
        bracketed = pc.and_(pc.starts_with(text, "["), pc.ends_with(text, "]"))
        simple = pc.match_substring_regex(text, _SIMPLE_BRACKETED)
        # A bracketed value is read only in its plain form; anything else goes per row.
        self._check(pc.or_(pc.invert(bracketed), simple))
        inner = pc.utf8_slice_codeunits(text, 2, -2)
        from_brackets = pc.split_pattern(inner, "', '")
        sep = ", " if self.layout is Layout.GENRE_LABELLED else ","
        from_commas = pc.split_pattern(text, sep)
        parts = pc.if_else(bracketed, from_brackets, from_commas)
        empty = pc.or_(pc.equal(text, ""), pc.equal(text, "[]"))
        parts = pc.if_else(empty, pa.scalar([], pa.list_(pa.string())), parts)
        # Items already trimmed and none empty: the per-row path would drop or trim them.
        items = pc.list_flatten(parts)
        if len(items):
            parents = pc.list_parent_indices(parts)
            odd = pc.or_(pc.equal(items, ""), pc.not_equal(pc.utf8_trim(items, _SPACE), items))
            odd_rows = pc.unique(pc.filter(parents, odd))
            self._check(pc.invert(pc.is_in(pa.array(range(self.n), pa.int64()), odd_rows)))
        return parts


def _validate_block(block: _Block, fields: tuple[SongField, ...]) -> pa.Array:
    """Run every field's kernels; the mask of rows they all pass."""
    split = {f.name: block.split(f.name) for f in fields if f.kind == "text_list"}
    if block.layout is Layout.EXPORTIFY and "artist_ids" in split and "artists" in block.raw:
        ids = split["artist_ids"]
        raw_ids = block.raw.get("artist_ids")
        if ids is not None and raw_ids is not None:
            # One artist id: one artist whose name may hold a comma (the per-row rule). The
            # per-row path counts bracketed ids before trimming them: those go per row.
            block._check(pc.invert(pc.starts_with(_strip(raw_ids), "[")))
            whole = _strip(block.raw["artists"])
            single = pa.ListArray.from_arrays(pa.array(range(block.n + 1), pa.int32()), whole)
            use_whole = pc.and_(pc.equal(pc.list_value_length(ids), 1), pc.not_equal(whole, ""))
            artists = split["artists"]
            if artists is not None:
                split["artists"] = pc.if_else(use_whole, single, artists)
    for f in fields:
        if f.kind == "text":
            block.text(f)
        elif f.kind in ("number", "integer"):
            block.number(f)
        elif f.kind == "boolean":
            block.boolean(f)
        else:
            block.text_list(f, split[f.name])
    return _all(block.masks, block.n)


def _record(header: list[str], cells: list[str]) -> dict[str | None, Any]:
    """The record as ``csv.DictReader`` gives it (surplus cells under None, missing as None)."""
    record: dict[str | None, Any] = dict(zip(header, cells, strict=False))
    if len(cells) > len(header):
        record[None] = cells[len(header) :]
    else:
        for name in header[len(cells) :]:
            record[name] = None
    return record


def _per_row(record: dict[str | None, Any], plan: CsvPlan) -> tuple[str | None, Song | list[str]]:
    """The per-row path's verdict (as :func:`~emergify_ingest.upload.csv_candidates`)."""
    track_id = _raw_track_id(record, plan.id_columns)
    if (
        any(isinstance(v, str) and "\x00" in v for v in record.values())
        or any(isinstance(v, list) and any("\x00" in c for c in v) for v in record.values())
        or any(isinstance(k, str) and "\x00" in k for k in record)
    ):
        return track_id, [_NUL_ERROR]
    try:
        return track_id, row_to_song(record, plan.layout)
    except RowError as exc:
        return track_id, exc.errors


def _songs_to_table(songs: list[Song], rows: list[int]) -> pa.Table:
    columns: dict[str, list[object]] = {
        f.name: [getattr(s, f.name) for s in songs] for f in _LAKE_SONG_FIELDS
    }
    columns["row"] = rows
    return pa.table(columns, schema=_SONG_SCHEMA)


def column_chunks(
    file: BinaryIO, plan: CsvPlan, ledger: UploadLedger, chunk_rows: int
) -> Iterator[ColumnChunk]:
    """Every record of the file validated (see the module's docstring) into ``ledger``;
    accepted songs yielded as tables of at most ``chunk_rows`` rows, in row order."""
    text = _open_text(file, plan.encoding)
    try:
        reader = csv.reader(text)
        header = next(reader)
        mapping: dict[str, int] = {}
        for i, name in enumerate(column_fields(header, plan.layout)):
            if name is not None and name != "track_uri":
                mapping[name] = i  # a later column wins, as in the per-row path
        index = 0
        row = 0
        pending: list[tuple[int, list[str] | csv.Error]] = []
        while True:
            try:
                for cells in reader:
                    if not cells:  # DictReader skips blank lines
                        continue
                    row += 1
                    pending.append((row, cells))
                    if len(pending) >= chunk_rows:
                        table = _block_table(pending, header, mapping, plan, ledger)
                        pending = []
                        if table.num_rows:
                            yield ColumnChunk(index, table)
                            index += 1
                break
            except csv.Error as exc:
                # The reader skips past the broken record, so one bad row does not end the file.
                row += 1
                pending.append((row, exc))
        if pending:
            table = _block_table(pending, header, mapping, plan, ledger)
            if table.num_rows:
                yield ColumnChunk(index, table)
    finally:
        text.detach()


def _block_table(
    pending: list[tuple[int, list[str] | csv.Error]],
    header: list[str],
    mapping: dict[str, int],
    plan: CsvPlan,
    ledger: UploadLedger,
) -> pa.Table:
    regular = [(r, c) for r, c in pending if not isinstance(c, csv.Error) and len(c) == len(header)]
    cells = [c for _, c in regular]
    block = _Block.from_cells(cells, mapping, plan.layout)
    ok = _validate_block(block, _LAKE_SONG_FIELDS).to_pylist() if cells else []
    if cells:
        # A NUL anywhere in a row (an unmapped column too) is the per-row path's to refuse.
        for column in zip(*cells, strict=True):
            if "\x00" in "".join(column):
                for i, value in enumerate(column):
                    if "\x00" in value:
                        ok[i] = False
    fast = {r: i for i, (r, _) in enumerate(regular) if ok[i]}
    id_column = block.values["track_id"].to_pylist() if cells else []
    take: list[int] = []
    take_rows: list[int] = []
    slow_songs: list[Song] = []
    slow_rows: list[int] = []
    for r, cells_or_error in pending:
        i = fast.get(r)
        if i is not None:
            if ledger.accept_id(r, id_column[i]):
                take.append(i)
                take_rows.append(r)
            continue
        if isinstance(cells_or_error, csv.Error):
            ledger.reject(r, None, [f"the record cannot be read as CSV: {cells_or_error}"])
            continue
        track_id, outcome = _per_row(_record(header, cells_or_error), plan)
        if isinstance(outcome, Song):
            if ledger.accept(r, outcome):
                slow_songs.append(outcome)
                slow_rows.append(r)
        else:
            ledger.reject(r, track_id, outcome)
    parts = []
    if take:
        indices = pa.array(take, pa.int64())
        columns = {f.name: block.values[f.name].take(indices) for f in _LAKE_SONG_FIELDS}
        columns["row"] = pa.array(take_rows, pa.int64())
        parts.append(pa.table(columns).cast(_SONG_SCHEMA))
    if slow_songs:
        parts.append(_songs_to_table(slow_songs, slow_rows))
    if not parts:
        return _SONG_SCHEMA.empty_table()
    table = pa.concat_tables(parts)
    return table.sort_by("row") if len(parts) > 1 else table


# --- events --------------------------------------------------------------------------------


def _json_text(column: pa.Array) -> pa.Array:
    """JSON string literals of a string column (null as ``null``)."""
    if pc.any(pc.match_substring_regex(column, "[\\x00-\\x1f]")).as_py():
        return pa.array(
            [json.dumps(v, ensure_ascii=False) for v in column.to_pylist()], pa.string()
        )
    escaped = pc.replace_substring(pc.replace_substring(column, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    return pc.fill_null(quoted, "null")


def _json_column(f: SongField, column: pa.Array) -> pa.Array:
    if f.kind == "text":
        return _json_text(column)
    if f.kind == "text_list":
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        quoted = pa.ListArray.from_arrays(column.offsets, _json_text(column.values))
        return pc.binary_join_element_wise("[", pc.binary_join(quoted, ","), "]", "")
    if f.kind == "boolean":
        return pc.fill_null(pc.if_else(column, "true", "false"), "null")
    return pc.fill_null(pc.cast(column, pa.string()), "null")


def event_records(
    table: pa.Table, *, upload_id: str, source: str, ingested_at: datetime
) -> list[tuple[bytes, bytes]]:
    """The songs-topic records of ``table``: key the track id, value the SongEvent JSON."""
    values = event_values(
        table, upload_id=upload_id, source=source, ingested_at=ingested_at
    ).to_pylist()
    keys = pc.cast(table.column("track_id"), pa.binary()).to_pylist()
    return list(zip(keys, values, strict=True))


def song_json(table: pa.Table) -> pa.Array:
    """The ``song`` object of every row's SongEvent, as JSON text (``{"track_id":...}``)."""
    pieces: list[Any] = []
    for n, f in enumerate(_EVENT_FIELDS):
        pieces.append(("{" if n == 0 else ",") + f'"{f.name}":')
        pieces.append(_json_column(f, table.column(f.name).combine_chunks()))
    pieces.append("}")
    return pc.binary_join_element_wise(*pieces, "")


def event_values(
    table: pa.Table,
    *,
    upload_id: str,
    source: str,
    ingested_at: datetime,
    songs: pa.Array | None = None,
) -> pa.Array:
    """The SongEvent JSON of every row of ``table``, as a binary array (``songs``: the rows'
    :func:`song_json`, when already built)."""
    stamp = TypeAdapter(datetime).dump_json(ingested_at).decode()
    head = (
        f'{{"schema_version":{SCHEMA_VERSION},"upload_id":{json.dumps(upload_id)},'
        f'"source":{json.dumps(source)},"ingested_at":{stamp},"song":'
    )
    body = song_json(table) if songs is None else songs
    return pc.cast(pc.binary_join_element_wise(head, body, "}", ""), pa.binary())


def read_all(
    data: bytes, plan: CsvPlan, chunk_rows: int = BLOCK_ROWS
) -> tuple[pa.Table, UploadLedger]:
    """Every chunk of ``data`` in one table, and the ledger (for tests and benchmarks)."""
    ledger = UploadLedger(10**9)
    chunks = list(column_chunks(io.BytesIO(data), plan, ledger, chunk_rows))
    if not chunks:
        return _SONG_SCHEMA.empty_table(), ledger
    return pa.concat_tables([c.table for c in chunks]), ledger
