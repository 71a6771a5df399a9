"""Column-wise CSV validation gives the per-row path's verdicts, row numbers and messages, and
the same songs in the master dataset and on the topic: on every file of the bad-upload corpus,
on real exports, and on randomly broken rows. Both column-wise readers are checked: the ``csv``
module's (``read_all``) and pyarrow's (``csv_arrow``), which must also read every cell of a
file exactly as the ``csv`` module does, or leave the file to it."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from emergify_contracts.events import SongEvent
from emergify_contracts.problems import ProblemError
from emergify_ingest.csv_arrow import read_upload, validate_table
from emergify_ingest.csv_columns import event_records, read_all
from emergify_ingest.master_dataset import songs_table
from emergify_ingest.upload import UploadLedger, accepted_chunks, csv_candidates, inspect_csv

DATA = Path(__file__).parents[2] / "data"
CORPUS = Path(__file__).parent / "bad_uploads"
NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def per_row(data: bytes, chunk_rows: int = 5_000) -> tuple[pa.Table, UploadLedger]:
    plan = inspect_csv(io.BytesIO(data), 10**6)
    ledger = UploadLedger(10**9)
    chunks = list(accepted_chunks(csv_candidates(io.BytesIO(data), plan), ledger, chunk_rows))
    songs = [s for c in chunks for s in c.songs]
    rows = [r for c in chunks for r in c.rows]
    table = songs_table(songs, rows, upload_id="u", source="s", ingested_at=NOW)
    return table.drop_columns(["upload_id", "source", "ingested_at"]), ledger


def arrow_path(data: bytes) -> tuple[pa.Table, UploadLedger] | None:
    """The pyarrow reader's accepted table and ledger, or None when it leaves the file to the
    ``csv`` module's reader."""
    upload = read_upload(data, 10**6, 2**20)
    if upload is None:
        return None
    ledger = UploadLedger(10**9)
    return validate_table(upload, ledger), ledger


def assert_same(data: bytes, chunk_rows: int = 5_000, arrow: bool | None = None) -> tuple[int, int]:
    """Every path over ``data``: same ledger, same accepted table, same events. ``arrow``: whether
    pyarrow's reader must take the file (True), must leave it (False), or either (None)."""
    expected, expected_ledger = per_row(data, chunk_rows)
    plan = inspect_csv(io.BytesIO(data), 10**6)
    got, ledger = read_all(data, plan, chunk_rows)
    _assert_same_outcome(got, ledger, expected, expected_ledger)
    by_arrow = arrow_path(data)
    if arrow is not None:
        assert (by_arrow is not None) == arrow
    if by_arrow is not None:
        _assert_same_outcome(*by_arrow, expected, expected_ledger)
    return ledger.accepted, ledger.rejected_count


def _assert_same_outcome(
    got: pa.Table, ledger: UploadLedger, expected: pa.Table, expected_ledger: UploadLedger
) -> None:
    assert [r.model_dump() for r in ledger.rejected] == [
        r.model_dump() for r in expected_ledger.rejected
    ]
    assert (ledger.accepted, ledger.rejected_count) == (
        expected_ledger.accepted,
        expected_ledger.rejected_count,
    )
    assert got.to_pylist() == expected.to_pylist()
    assert got.schema == expected.schema
    events = event_records(got, upload_id="u1", source="csv:test", ingested_at=NOW)
    for (key, value), song in zip(events, expected.to_pylist(), strict=True):
        event = SongEvent.model_validate_json(value)
        song.pop("row")
        reference = SongEvent(upload_id="u1", source="csv:test", ingested_at=NOW, song=song)
        assert event == reference
        assert key == song["track_id"].encode()
        assert json.loads(value) == json.loads(reference.model_dump_json())


def _has_rows(path: Path) -> bool:
    try:
        inspect_csv(io.BytesIO(path.read_bytes()), 10**6)
    except ProblemError:
        return False  # a whole-file problem: refused before any row is validated
    return True


ROW_FILES = sorted(p for p in CORPUS.iterdir() if p.suffix in (".csv", ".tsv") and _has_rows(p))


def test_the_corpus_has_files_with_rows() -> None:
    names = {p.name for p in ROW_FILES}
    assert {"out_of_range.csv", "wrong_types.csv", "ragged_rows.csv", "nul_in_a_row.csv"} <= names


# Files pyarrow's reader must leave to the csv module's: ragged records (a line of spaces is
# one; so is a record whose open quote swallows its commas), Latin-1 text.
NOT_FOR_ARROW = {
    "ragged_rows.csv",
    "latin1.csv",
    "blank_and_whitespace_rows.csv",
    "unclosed_quote.csv",
}


@pytest.mark.parametrize("path", ROW_FILES, ids=[p.name for p in ROW_FILES])
def test_every_corpus_file_gets_the_same_verdicts(path: Path) -> None:
    assert_same(path.read_bytes(), arrow=path.name not in NOT_FOR_ARROW)


def test_the_sample_export_is_accepted_column_wise_with_the_same_songs() -> None:
    data = (DATA / "every_fresh_find.csv").read_bytes()
    accepted, rejected = assert_same(data, 1_000, arrow=True)
    assert (accepted, rejected) == (4470, 0)


# --- randomly broken rows ----------------------------------------------------------------

BAD_CELLS = [
    "",
    " ",
    "fast",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "1_000",
    "0x1F",
    "12.5",
    "12.0",
    "-1",
    "101",
    "1.7",
    "-0.1",
    "+0.5",
    ".5",
    "5.",
    "1e-3",
    " 0.5 ",
    "\u00a00.5",
    "0.5\u2003",
    "true",
    "yes",
    "maybe",
    "[]",
    "['A', 'B']",
    "[\"Bob's\", 'C']",
    "['A',  '']",
    "[' A ']",
    "A, B",
    ",",
    "x" * 501,
    "short",
    "0123456789abcdefABCDE\u00e9",
    "1999",
    "1999-13",
    "1999-01-01T00:00",
    "=1+1",
    "line\nbreak",
    'quote"inside',
    "tab\tinside",
    "\ttabbed",
    "\u00e9t\u00e9",
]


def mutate(source: Path, rows: int, seed: int, ragged: bool = True) -> bytes:
    """``rows`` records of ``source`` with random cells replaced by bad values, some rows
    repeated, and (``ragged``) some shortened or lengthened."""
    rng = random.Random(seed)
    text = source.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    records = [r for _, r in zip(range(rows), reader, strict=False)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        record = list(record)
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            record[rng.randrange(len(record))] = rng.choice(BAD_CELLS)
        roll = rng.random()
        if roll < 0.02 and ragged:
            record = record[: rng.randrange(1, len(record))]
        elif roll < 0.04 and ragged:
            record = [*record, "surplus"]
        elif 0.04 <= roll < 0.06 and records:
            record = list(rng.choice(records))  # a repeated track id
        writer.writerow(record)
        if rng.random() < 0.01:
            out.write("\n")  # a blank line, skipped by both
    return out.getvalue().encode()


@pytest.mark.parametrize("seed", range(4))
def test_randomly_broken_exportify_rows(seed: int) -> None:
    accepted, rejected = assert_same(mutate(DATA / "every_fresh_find.csv", 600, seed), 250)
    assert accepted > 0 and rejected > 0


@pytest.mark.parametrize("seed", range(4))
def test_randomly_broken_exportify_cells_read_by_pyarrow(seed: int) -> None:
    data = mutate(DATA / "every_fresh_find.csv", 600, seed + 20, ragged=False)
    accepted, rejected = assert_same(data, 250, arrow=True)
    assert accepted > 0 and rejected > 0


def kaggle_source(tmp_path: Path) -> Path:
    sample = list(
        csv.DictReader(io.StringIO((DATA / "every_fresh_find.csv").read_text("utf-8-sig")))
    )
    path = tmp_path / "kaggle.csv"
    columns = [
        "id",
        "name",
        "popularity",
        "duration_ms",
        "explicit",
        "artists",
        "id_artists",
        "release_date",
        "danceability",
        "energy",
        "key",
        "loudness",
        "mode",
        "speechiness",
        "acousticness",
        "instrumentalness",
        "liveness",
        "valence",
        "tempo",
        "time_signature",
    ]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in sample[:600]:
            names = row["Artist Name(s)"].split(",")
            ids = row["Artist IDs"].split(",")
            writer.writerow(
                [
                    row["Spotify ID"],
                    row["Track Name"],
                    row["Popularity"],
                    row["Duration (ms)"],
                    row.get("Explicit", "false"),
                    "[" + ", ".join(repr(n) for n in names) + "]",
                    "[" + ", ".join(repr(i) for i in ids) + "]",
                    row["Release Date"],
                    row["Danceability"],
                    row["Energy"],
                    row["Key"],
                    row["Loudness"],
                    row["Mode"],
                    row["Speechiness"],
                    row["Acousticness"],
                    row["Instrumentalness"],
                    row["Liveness"],
                    row["Valence"],
                    row["Tempo"],
                    row["Time Signature"],
                ]
            )
    return path


@pytest.mark.parametrize("seed", range(4))
def test_randomly_broken_kaggle_rows(seed: int, tmp_path: Path) -> None:
    accepted, rejected = assert_same(mutate(kaggle_source(tmp_path), 600, seed + 10), 250)
    assert accepted > 0 and rejected > 0


@pytest.mark.parametrize("seed", range(4))
def test_randomly_broken_kaggle_cells_read_by_pyarrow(seed: int, tmp_path: Path) -> None:
    data = mutate(kaggle_source(tmp_path), 600, seed + 30, ragged=False)
    accepted, rejected = assert_same(data, 250, arrow=True)
    assert accepted > 0 and rejected > 0


# --- pyarrow's reader against the csv module's, cell by cell ---------------------------------

KAGGLE_HEADER = (
    "id,name,popularity,duration_ms,explicit,artists,id_artists,release_date,danceability,"
    "energy,key,loudness,mode,speechiness,acousticness,instrumentalness,liveness,valence,tempo,"
    "time_signature"
)
FRAGMENTS = ["a", "b", "0.5", '"', '""', "\r", "\n", "\r\n", " ", "\u00e9", "\ufeff", "\t", ","]
LINE_ENDS = ["\n", "\r\n", "\r", "\n\n", "\r\n\r\n", " \n"]


def _random_cell(rng: random.Random) -> str:
    inner = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(0, 5)))
    if rng.random() < 0.15:  # quoted, rarely left open or followed by more text
        closing = '"' if rng.random() < 0.97 else ""
        return '"' + inner + closing + ("" if rng.random() < 0.9 else rng.choice(FRAGMENTS))
    # Unquoted: a quote inside is kept as text, one at the start would open a quoted field.
    return inner.replace(",", "").replace("\n", "").replace("\r", "").lstrip('"')


def _python_records(data: bytes) -> list[list[str]]:
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    return [r for r in csv.reader(text) if r]


@pytest.mark.parametrize("seed", range(3))
def test_pyarrow_reads_every_cell_as_the_csv_module_does_or_leaves_the_file(seed: int) -> None:
    """Random quoting, line ends, BOMs and blank lines: whenever pyarrow's reader takes the file,
    its header and cells are the csv module's exactly."""
    rng = random.Random(seed)
    taken = left = 0
    columns = KAGGLE_HEADER.count(",") + 1
    for _ in range(1_500):
        lines = [
            ",".join(_random_cell(rng) for _ in range(columns)) + rng.choice(LINE_ENDS)
            for _ in range(rng.randrange(1, 6))
        ]
        bom = "\ufeff" if rng.random() < 0.2 else ""
        data = (bom + KAGGLE_HEADER + rng.choice(LINE_ENDS[:3]) + "".join(lines)).encode()
        upload = read_upload(data, 10**6, 2**20)
        if upload is None:
            left += 1
            continue
        taken += 1
        records = _python_records(data)
        table = upload.table
        assert upload.header == records[0] == table.column_names
        cells = [list(r) for r in zip(*(c.to_pylist() for c in table.columns), strict=True)]
        assert cells == records[1:], data
    assert taken > 150 and left > 150  # both outcomes are exercised
