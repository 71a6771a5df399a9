"""The pure parsing core: row numbers, quoted line breaks, encodings, layouts."""

from __future__ import annotations

import io

import pytest

from emergify_contracts.problems import ProblemError
from emergify_contracts.song import Layout
from emergify_ingest.upload import (
    UploadLedger,
    accepted_chunks,
    csv_candidates,
    inspect_csv,
)

HEADER = (
    "track_id,name,artists,danceability,energy,loudness,speechiness,acousticness,"
    "instrumentalness,liveness,valence,tempo"
)
FEATURES = "0.5,0.5,-7,0.1,0.1,0.0,0.1,0.5,120"


def csv_file(*lines: str, encoding: str = "utf-8") -> io.BytesIO:
    return io.BytesIO(("\r\n".join([HEADER, *lines]) + "\r\n").encode(encoding))


def test_row_numbers_count_records_not_lines() -> None:
    file = csv_file(
        f'5P6nbeGMqnAGwqt9rrraaQ,"Two\nline title",A,{FEATURES}',
        "",
        f"2ERNqTqQJKm10LH6etp0IE,Three,B,{FEATURES}",
        f"bad,Four,C,{FEATURES}",
    )
    plan = inspect_csv(file, max_rows=10)
    assert (plan.layout, plan.records, plan.encoding) == (Layout.CANONICAL, 3, "utf-8-sig")

    candidates = list(csv_candidates(file, plan))
    assert [(row, track_id) for row, track_id, _ in candidates] == [
        (1, "5P6nbeGMqnAGwqt9rrraaQ"),
        (2, "2ERNqTqQJKm10LH6etp0IE"),
        (3, "bad"),
    ]
    assert candidates[0][2].name == "Two\nline title"  # type: ignore[union-attr]


def test_chunks_hold_accepted_songs_only() -> None:
    lines = [f"{i:022d},S{i},A,{FEATURES}" for i in range(7)] + [f"x,S,A,{FEATURES}"]
    file = csv_file(*lines)
    ledger = UploadLedger(max_reported=10)
    chunks = list(accepted_chunks(csv_candidates(file, inspect_csv(file, 100)), ledger, 3))
    assert [(c.index, c.rows) for c in chunks] == [(0, [1, 2, 3]), (1, [4, 5, 6]), (2, [7])]
    assert (ledger.accepted, ledger.rejected_count) == (7, 1)


def test_rejections_beyond_the_report_limit_are_counted() -> None:
    file = csv_file(*[f"bad{i},S,A,{FEATURES}" for i in range(5)])
    ledger = UploadLedger(max_reported=2)
    assert list(accepted_chunks(csv_candidates(file, inspect_csv(file, 100)), ledger, 3)) == []
    assert (len(ledger.rejected), ledger.rejected_count) == (2, 5)
    assert ledger.warnings() == ["5 rows were rejected; only the first 2 are listed"]


def test_bom_and_cp1252() -> None:
    with_bom = b"\xef\xbb\xbf" + csv_file(f"5P6nbeGMqnAGwqt9rrraaQ,x,A,{FEATURES}").getvalue()
    plan = inspect_csv(io.BytesIO(with_bom), 5)
    assert (plan.encoding, plan.records, plan.warnings) == ("utf-8-sig", 1, ())
    plan = inspect_csv(
        csv_file(f"5P6nbeGMqnAGwqt9rrraaQ,Café,Zoë,{FEATURES}", encoding="cp1252"), 5
    )
    assert plan.encoding == "cp1252"
    assert "byte 0xe9 is not UTF-8" in plan.warnings[0]


def test_max_rows_stops_early() -> None:
    file = csv_file(*[f"{i:022d},S,A,{FEATURES}" for i in range(50)])
    with pytest.raises(ProblemError) as excinfo:
        inspect_csv(file, max_rows=10)
    assert excinfo.value.status == 413
